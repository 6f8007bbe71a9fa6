//! A checkpoint: flush the transaction's output, write each task's snapshot to object storage
//! as a new object, send the input offsets — each naming its snapshot — to the transaction,
//! and commit. Then dispose of snapshots beyond `checkpoint.retained`.

use std::time::Instant;

use oxbow_crds::checkpoint::{OffsetMetadata, SnapshotKey};
use rdkafka::{
    Offset, TopicPartitionList,
    consumer::Consumer,
    error::{KafkaError, RDKafkaErrorCode},
    producer::Producer,
};

use super::{CheckpointReport, RuntimeError, Worker, error::kafka, now_ms};
use crate::events::{CheckpointCompleted, Emit, SnapshotDisposalFailed};

impl Worker {
    /// Takes a checkpoint: flush, snapshot, commit offsets with the output.
    pub fn checkpoint(&mut self) -> Result<CheckpointReport, RuntimeError> {
        let started = Instant::now();
        self.checkpoint_id += 1;
        self.producer
            .flush(self.config.kafka_timeout)
            .map_err(kafka("flush the producer"))?;
        let failed = self.producer.context().take_failed();
        if failed > 0 {
            return Err(RuntimeError::Delivery(failed));
        }
        let mut offsets = TopicPartitionList::new();
        let (mut snapshots, mut bytes) = (0, 0u64);
        for ((topic, partition), slot) in &mut self.slots {
            slot.pending_snapshot = None;
            let Some(position) = slot.position else {
                continue;
            };
            let reusable = slot
                .last_snapshot
                .as_ref()
                .filter(|(revision, _)| *revision == slot.task.revision())
                .map(|(_, key)| key.clone());
            let metadata = match &self.store {
                Some(_) if reusable.is_some() => reusable,
                Some(store) if slot.task.needs_snapshot() => {
                    let key = SnapshotKey {
                        topic: topic.clone(),
                        partition: *partition,
                        checkpoint_id: self.checkpoint_id,
                        writer: self.writer.clone(),
                    }
                    .key();
                    let snapshot =
                        slot.task
                            .snapshot()
                            .map_err(|source| RuntimeError::Snapshot {
                                action: "write the snapshot",
                                topic: topic.clone(),
                                partition: *partition,
                                source,
                            })?;
                    bytes += snapshot.len() as u64;
                    snapshots += 1;
                    self.io.block_on(store.put_new(&key, snapshot))?;
                    slot.pending_snapshot = Some(key.clone());
                    slot.last_snapshot = Some((slot.task.revision(), key.clone()));
                    Some(key)
                }
                _ => None,
            };
            let request = &self.config.job.restore_request;
            let metadata = OffsetMetadata {
                generation: self.config.job.assignment.generation,
                restore_request: (!request.is_empty()).then(|| request.clone()),
                snapshot: metadata,
            };
            offsets
                .add_partition_offset(topic, *partition, Offset::Offset(position))
                .map_err(kafka("build the offsets"))?;
            if let Some(mut e) = offsets.find_partition(topic, *partition) {
                e.set_metadata(metadata.encode());
            }
        }
        if self.exactly_once {
            let group = self.consumer.group_metadata().ok_or(RuntimeError::Kafka {
                action: "read the consumer group metadata",
                source: KafkaError::Global(RDKafkaErrorCode::InvalidGroupId),
            })?;
            if offsets.count() > 0 {
                self.producer
                    .send_offsets_to_transaction(&offsets, &group, self.config.kafka_timeout)
                    .map_err(kafka("send the offsets to the transaction"))?;
            }
            self.producer
                .commit_transaction(self.config.kafka_timeout)
                .map_err(kafka("commit the transaction"))?;
            self.transaction_open = false;
            self.producer
                .begin_transaction()
                .map_err(kafka("begin a transaction"))?;
            self.transaction_open = true;
        } else if offsets.count() > 0 {
            self.consumer
                .commit(&offsets, rdkafka::consumer::CommitMode::Sync)
                .map_err(kafka("commit the offsets"))?;
        }
        self.last_checkpoint = Instant::now();
        self.dispose_old_snapshots();
        let report = CheckpointReport {
            id: self.checkpoint_id,
            snapshots,
            bytes,
            duration: started.elapsed(),
        };
        let at_ms = now_ms();
        CheckpointCompleted {
            report: &report,
            transactional: self.exactly_once,
            at_ms,
        }
        .emit(&self.metrics);
        self.last_report = Some((report.clone(), at_ms));
        Ok(report)
    }

    /// Once a checkpoint committed, keeps the last `checkpoint.retained` snapshots of each
    /// partition and deletes older ones. The newest is the one the committed offset names, so
    /// it is never deleted; savepoints live elsewhere and are never touched. Failing to delete
    /// only leaves garbage behind.
    fn dispose_old_snapshots(&mut self) {
        let retained = self
            .spec
            .checkpoint
            .as_ref()
            .map_or(1, |c| c.retained.max(1)) as usize;
        let Some(store) = &self.store else { return };
        for slot in self.slots.values_mut() {
            slot.committed_snapshots
                .extend(slot.pending_snapshot.take());
            while slot.committed_snapshots.len() > retained {
                let Some(old) = slot.committed_snapshots.pop_front() else {
                    break;
                };
                if let Err(error) = self.io.block_on(store.delete(&old)) {
                    SnapshotDisposalFailed { error: &error }.emit(&self.metrics);
                }
            }
        }
    }
}
