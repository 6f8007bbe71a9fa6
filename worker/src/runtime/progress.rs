//! Event time across partitions: which partitions have caught up and gone idle, and the
//! source stage's progress reports to the shuffle stage (see the engine's task module for
//! the rules).
//!
//! - A partition is *caught up* when the consumer's position has reached the partition's end
//!   as `read_committed` consumers see it (the last stable offset). It is checked only for
//!   partitions that gave no record for a second, at most once a second, and never while a
//!   backlog remains: a partition whose first fetch after a restart is slow is not idle.
//! - Every second, each source task of a job with a shuffle stage writes its progress (stream
//!   time, idle or not) to every shuffle partition, inside the transaction like any output.

use std::time::{Duration, Instant};

use rdkafka::{Offset, consumer::Consumer};

use super::{
    RuntimeError, Worker,
    output::{destination, send_output, send_progress},
};
use crate::engine::Upstream;

/// How often progress is looked after, and how long a partition must have been quiet before
/// it is checked for being caught up.
const PERIOD: Duration = Duration::from_secs(1);
/// The longest a check of a partition's end may hold up the processing loop.
const END_TIMEOUT: Duration = Duration::from_secs(1);

impl Worker {
    /// Once a second: notes the partitions that have caught up, lets idle ones advance their
    /// stream time, and sends the source tasks' progress to the shuffle stage.
    pub(super) fn look_after_progress(&mut self, now_ms: i64) -> Result<(), RuntimeError> {
        if self.last_progress.elapsed() < PERIOD {
            return Ok(());
        }
        self.last_progress = Instant::now();
        self.note_caught_up(now_ms);
        self.advance_idle(now_ms)?;
        self.report_progress(now_ms)
    }

    /// Starts the idle clock of each quiet partition whose consumer has reached its end. A
    /// check that fails (the broker is unreachable) leaves the partition not caught up.
    fn note_caught_up(&mut self, now_ms: i64) {
        let positions = self.consumer.position().ok();
        for ((topic, partition), slot) in &mut self.slots {
            let quiet = slot.last_record.elapsed() >= PERIOD;
            if !quiet || slot.task.is_caught_up() || self.shuffle_topic.as_ref() == Some(topic) {
                continue;
            }
            let Ok((low, end)) = self
                .consumer
                .fetch_watermarks(topic, *partition, END_TIMEOUT)
            else {
                break;
            };
            // librdkafka's position moves past transaction markers; ours, after the last
            // record, does not.
            let consumer = positions
                .as_ref()
                .and_then(|p| p.find_partition(topic, *partition))
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            let position = consumer.max(slot.position);
            if end <= low || position.is_some_and(|p| p >= end) {
                slot.task.caught_up(now_ms);
            }
        }
    }

    /// Advances the stream time of idle partitions and produces what that fires.
    pub(super) fn advance_idle(&mut self, now_ms: i64) -> Result<(), RuntimeError> {
        for ((topic, _), slot) in &mut self.slots {
            slot.task.on_idle(now_ms, &mut self.output);
            let to = destination(&self.config.job, self.shuffle_topic.as_deref(), topic);
            send_output(&self.producer, to, &mut self.output)?;
        }
        Ok(())
    }

    /// Writes each source task's progress to every shuffle partition.
    fn report_progress(&mut self, now_ms: i64) -> Result<(), RuntimeError> {
        let Some(shuffle) = &self.shuffle_topic else {
            return Ok(());
        };
        for ((topic, _), slot) in &self.slots {
            if topic == shuffle {
                continue;
            }
            let upstream = Upstream {
                id: &slot.upstream_id,
                stream_time: slot.task.state().stream_time,
                idle: slot.task.is_idle(now_ms),
            };
            send_progress(&self.producer, shuffle, &self.shuffle_partitions, &upstream)?;
        }
        Ok(())
    }
}
