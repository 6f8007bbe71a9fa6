//! Restore: rebuild every task from the committed offsets and the snapshots they name (or from
//! the savepoint the job file names), and seek the consumer there.

use std::{collections::VecDeque, sync::Arc};

use oxbow_crds::{checkpoint::OffsetMetadata, jobfile::Restore, streamjob::StartingOffsets};
use rdkafka::{Offset, TopicPartitionList, consumer::Consumer};

use super::{RuntimeError, Slot, Worker, error::kafka};
use crate::engine::{CompiledPipeline, Task};

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
        let stateless = self.config.job.restore == Restore::Stateless;
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
            // A savepoint restore holds until this generation commits its own progress; after
            // a restart of the same generation the committed offsets are newer than the savepoint.
            let from_savepoint = savepoint.as_ref().filter(|_| {
                committed
                    .as_ref()
                    .is_none_or(|(_, m)| m.generation != generation)
            });
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
            let offset = position.map_or(self.starting_offset(&topic), Offset::Offset);
            assignment
                .add_partition_offset(&topic, partition, offset)
                .map_err(kafka("build the assignment"))?;
            // Metrics count what this process does, not what the restored state had counted.
            let counters = &task.state().counters;
            let exported = (counters.records_in, counters.records_out);
            self.slots.insert(
                (topic, partition),
                Slot {
                    task,
                    position,
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

    /// Where a partition without committed offsets starts: the shuffle topic from its
    /// beginning (everything in it is this job's own committed output), source topics per
    /// `startingOffsets`.
    fn starting_offset(&self, topic: &str) -> Offset {
        if self.is_shuffle(topic) {
            return Offset::Beginning;
        }
        match self.config.job.spec.source.starting_offsets {
            StartingOffsets::Earliest => Offset::Beginning,
            StartingOffsets::Latest => Offset::End,
        }
    }
}
