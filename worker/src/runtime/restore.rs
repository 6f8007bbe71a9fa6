//! Restore: rebuild every task from the committed offsets and the snapshots they name (or from
//! the savepoint the job file names), and seek the consumer there.

use std::{collections::VecDeque, sync::Arc, time::Instant};

use oxbow_crds::{checkpoint::OffsetMetadata, jobfile::Restore, streamjob::StartingOffsets};
use rdkafka::{Offset, TopicPartitionList, consumer::Consumer};

use super::{RuntimeError, Slot, Worker, error::kafka};
use crate::{
    engine::{CompiledPipeline, Task, snapshot::SnapshotError},
    events::{Emit, StateDiscarded},
};

impl Worker {
    /// Rebuilds every task from the committed offsets and the snapshots they name, and seeks.
    pub(super) fn restore(&mut self) -> Result<(), RuntimeError> {
        let owned: Vec<(String, i32)> = self
            .config
            .job
            .assignment
            .worker(self.config.ordinal)
            .map(|w| {
                w.topic_partitions()
                    .map(|tp| (tp.topic, tp.partition))
                    .collect()
            })
            .unwrap_or_default();
        let mut wanted = TopicPartitionList::new();
        for (topic, partition) in &owned {
            wanted.add_partition(topic, *partition);
        }
        let committed = self
            .consumer
            .committed_offsets(wanted, self.config.kafka_timeout)
            .map_err(kafka("read the committed offsets"))?;
        let generation = self.config.job.assignment.generation;
        let request = self.config.job.restore_request.as_str();
        let savepoint = match &self.config.job.restore {
            Restore::Savepoint { path } => Some(self.read_savepoint(path)?),
            _ => None,
        };
        let mut assignment = TopicPartitionList::new();
        self.slots.clear();
        for (topic, partition) in owned {
            let committed = match committed
                .find_partition(&topic, partition)
                .map(|e| (e.offset(), e.metadata().to_owned()))
            {
                Some((Offset::Offset(offset), metadata)) => {
                    Some((offset, OffsetMetadata::decode(&metadata)?))
                }
                _ => None,
            };
            // The committed offsets are this request's own progress: the worker is restarting
            // and continues from them, whatever the request restored from.
            let own = committed.as_ref().is_some_and(|(_, m)| {
                if request.is_empty() {
                    m.generation == generation
                } else {
                    m.restore_request.as_deref() == Some(request)
                }
            });
            // A stateless request starts empty once; its own checkpoints restore like any.
            // (A job file without a request has no way to tell: it always starts empty.)
            let stateless =
                self.config.job.restore == Restore::Stateless && (!own || request.is_empty());
            let from_savepoint = savepoint.as_ref().filter(|_| !own);
            let mut committed_snapshots = VecDeque::new();
            let mut last_snapshot = None;
            let (task, position) = match (from_savepoint, committed) {
                (Some(savepoint), _) => self.task_from_savepoint(savepoint, &topic, partition)?,
                (None, Some((offset, metadata))) => {
                    let task = match &metadata.snapshot {
                        Some(key) if !stateless => {
                            let task = self.task_from_snapshot(key, &topic, partition)?;
                            last_snapshot = Some((task.revision(), key.clone()));
                            task
                        }
                        _ => Task::new(self.pipeline_for(&topic)),
                    };
                    committed_snapshots.extend(metadata.snapshot);
                    (task, Some(offset))
                }
                (None, None) => (Task::new(self.pipeline_for(&topic)), None),
            };
            // Resolved once and committed with the first checkpoint: a restart never resolves
            // `latest` again (and skips what arrived meanwhile).
            let position = match position {
                Some(offset) => offset,
                None => self.starting_offset(&topic, partition)?,
            };
            let task = if self.is_shuffle(&topic) {
                task.with_upstreams(Arc::clone(&self.upstreams))
            } else {
                task
            };
            assignment
                .add_partition_offset(&topic, partition, Offset::Offset(position))
                .map_err(kafka("build the assignment"))?;
            let upstream_id = format!("{topic}/{partition}");
            // Metrics count what this process does, not what the restored state had counted.
            let counters = &task.state().counters;
            let exported = (counters.records_in, counters.records_out);
            self.slots.insert(
                (topic, partition),
                Slot {
                    task,
                    upstream_id,
                    position: Some(position),
                    last_record: Instant::now(),
                    committed_snapshots,
                    pending_snapshot: None,
                    exported,
                    last_snapshot,
                },
            );
        }
        self.consumer
            .assign(&assignment)
            .map_err(kafka("assign the partitions"))?;
        Ok(())
    }

    /// The stage that runs on `topic`'s partitions.
    pub(crate) fn pipeline_for(&self, topic: &str) -> Arc<CompiledPipeline> {
        match (&self.stages.shuffle, self.is_shuffle(topic)) {
            (Some(shuffle), true) => Arc::clone(shuffle),
            _ => Arc::clone(&self.stages.source),
        }
    }

    pub(super) fn is_shuffle(&self, topic: &str) -> bool {
        self.shuffle_topic.as_deref() == Some(topic)
    }

    /// Where a partition without committed offsets starts, as an offset read from the broker
    /// now: the shuffle topic from its beginning (everything in it is this job's own committed
    /// output), source topics per `startingOffsets` — `latest` is the end that
    /// `read_committed` consumers see, `timestamp` the first record at or after
    /// `startingTimestamp` (the end when there is none yet).
    fn starting_offset(&self, topic: &str, partition: i32) -> Result<i64, RuntimeError> {
        let (low, high) = self
            .consumer
            .fetch_watermarks(topic, partition, self.config.kafka_timeout)
            .map_err(kafka(
                "read where a partition without committed offsets starts",
            ))?;
        if self.is_shuffle(topic) {
            return Ok(low);
        }
        match (
            self.config.job.spec.source.starting_offsets,
            self.spec.starting_timestamp_ms,
        ) {
            (StartingOffsets::Earliest, _) => Ok(low),
            (StartingOffsets::Timestamp, Some(at)) => {
                let mut wanted = TopicPartitionList::new();
                wanted
                    .add_partition_offset(topic, partition, Offset::Offset(at))
                    .map_err(kafka("build the timestamp lookup"))?;
                let found = self
                    .consumer
                    .offsets_for_times(wanted, self.config.kafka_timeout)
                    .map_err(kafka("look up the offset of startingTimestamp"))?;
                let offset = found.find_partition(topic, partition).map(|e| e.offset());
                Ok(match offset {
                    Some(Offset::Offset(offset)) => offset.clamp(low, high),
                    _ => high,
                })
            }
            _ => Ok(high),
        }
    }

    /// The task of `topic`-`partition` restored from the snapshot `key`. Window state of an
    /// incompatible shape stops the worker, naming both shapes — unless the spec says
    /// `upgrade.discardIncompatibleState`, and then the task starts empty.
    pub(super) fn task_from_snapshot(
        &self,
        key: &str,
        topic: &str,
        partition: i32,
    ) -> Result<Task, RuntimeError> {
        let store = self.store.as_ref().ok_or(RuntimeError::InvalidJob(
            "committed offsets or a savepoint name snapshots but the job has no checkpoint.storage"
                .into(),
        ))?;
        let bytes = self.io.block_on(store.get(key))?;
        match Task::restore(self.pipeline_for(topic), &bytes) {
            Err(SnapshotError::IncompatibleShape { reason, .. })
                if self.config.job.spec.upgrade.discard_incompatible_state =>
            {
                StateDiscarded {
                    topic,
                    partition,
                    reason: &reason,
                }
                .emit(&self.metrics);
                Ok(Task::new(self.pipeline_for(topic)))
            }
            restored => restored.map_err(|source| RuntimeError::Snapshot {
                action: "restore the snapshot",
                topic: topic.to_owned(),
                partition,
                source,
            }),
        }
    }
}
