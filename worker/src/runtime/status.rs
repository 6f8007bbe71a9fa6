//! What a running worker publishes for the admin API: its status and its metrics.

use oxbow_crds::{
    admin::{CheckpointSummary, PartitionStatus, WorkerState, WorkerStatus},
    jobfile::Restore,
};

use super::{Exported, Shared, Worker};
use crate::{
    engine::DeadLetterReason,
    metrics::{PartitionLabel, ReasonLabel},
};

impl Worker {
    /// Writes the worker's status for the admin API, and the metrics that come from the tasks'
    /// counters (events count their own, see [`crate::events`]).
    pub(super) fn publish(&mut self, shared: &Shared, state: WorkerState) {
        let (mut records_in, mut records_out, mut dead) = (0, 0, [0u64; 4]);
        let mut partitions = Vec::new();
        let mut state_bytes = 0;
        let m = &shared.metrics;
        let repartitions = self.shuffle_topic.is_some();
        for ((topic, partition), slot) in &mut self.slots {
            let task = slot.task.state();
            let is_shuffle = self.shuffle_topic.as_deref() == Some(topic.as_str());
            // Job totals: records taken from the sources, results given to the sink.
            if !is_shuffle {
                records_in += task.counters.records_in;
            }
            if is_shuffle || !repartitions {
                records_out += task.counters.records_out;
            }
            let label = PartitionLabel {
                topic: topic.clone(),
                partition: *partition,
            };
            m.records_in
                .get_or_create(&label)
                .inc_by(task.counters.records_in.saturating_sub(slot.exported.0));
            m.records_out
                .get_or_create(&label)
                .inc_by(task.counters.records_out.saturating_sub(slot.exported.1));
            slot.exported = (task.counters.records_in, task.counters.records_out);
            m.consumer_position
                .get_or_create(&label)
                .set(slot.position.unwrap_or(-1));
            for (d, n) in dead.iter_mut().zip(task.counters.dead_lettered) {
                *d += n;
            }
            state_bytes += slot.task.state_bytes() as u64;
            partitions.push(PartitionStatus {
                topic: topic.clone(),
                partition: *partition,
                position: slot.position.unwrap_or(-1),
                stream_time_ms: task.stream_time,
            });
        }
        for (i, reason) in DeadLetterReason::ALL.iter().enumerate() {
            m.dead_lettered
                .get_or_create(&ReasonLabel {
                    reason: reason.as_str(),
                })
                .inc_by(dead[i].saturating_sub(self.exported.dead_lettered[i]));
        }
        m.state_bytes
            .set(i64::try_from(state_bytes).unwrap_or(i64::MAX));
        self.exported = Exported {
            dead_lettered: dead,
        };
        let last_checkpoint = self.last_report.as_ref().map(|(r, at)| CheckpointSummary {
            id: r.id,
            completed_at_ms: *at,
            duration_ms: u64::try_from(r.duration.as_millis()).unwrap_or(u64::MAX),
            size_bytes: r.bytes,
            path: self
                .store
                .as_ref()
                .map(|s| s.url("state"))
                .unwrap_or_default(),
        });
        if let Ok(mut status) = shared.status.lock() {
            *status = WorkerStatus {
                ordinal: self.config.ordinal,
                assignment_generation: self.config.job.assignment.generation,
                spec_generation: self.config.job.spec_generation,
                state,
                restored_from: match &self.config.job.restore {
                    Restore::Savepoint { path } => Some(path.clone()),
                    _ => None,
                },
                partitions,
                last_checkpoint,
                state_bytes,
                records_in,
                records_out,
                dead_lettered: dead.iter().sum(),
                error: self.last_error.clone(),
            };
        }
    }
}
