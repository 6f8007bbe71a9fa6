//! The worker's internal events: one struct per event that matters, which writes its log line
//! and counts its metric in one place, so that the two never drift (Vector's internal-events
//! pattern). Events that can repeat on the hot path log through a [`RateLimit`]: one line per
//! interval, with the number held back since the last one; their counters count every one.

use std::{
    sync::atomic::{AtomicI64, AtomicU64, Ordering},
    time::Duration,
};

use crate::{
    metrics::{Metrics, OutcomeLabel, ReasonLabel},
    runtime::{CheckpointReport, RuntimeError},
};

/// An event the worker emits: logs and counts it.
pub trait Emit {
    /// Writes the log line and updates the metrics.
    fn emit(self, metrics: &Metrics);
}

/// Lets one log line through per interval and counts the ones it held back.
#[derive(Debug)]
pub struct RateLimit {
    every_ms: i64,
    /// Epoch ms of the last line let through; `i64::MIN` before the first.
    last_ms: AtomicI64,
    held_back: AtomicU64,
}

impl RateLimit {
    /// At most one line per `every`.
    pub const fn new(every: Duration) -> Self {
        RateLimit {
            every_ms: every.as_millis() as i64,
            last_ms: AtomicI64::new(i64::MIN),
            held_back: AtomicU64::new(0),
        }
    }

    /// At `now_ms`: `Some(lines held back since the last one)` when this line may be written.
    pub fn admit(&self, now_ms: i64) -> Option<u64> {
        let last = self.last_ms.load(Ordering::Relaxed);
        if last != i64::MIN && now_ms.saturating_sub(last) < self.every_ms {
            self.held_back.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.last_ms
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .ok()
            .map(|_| self.held_back.swap(0, Ordering::Relaxed))
            .or_else(|| {
                self.held_back.fetch_add(1, Ordering::Relaxed);
                None
            })
    }
}

fn now_ms() -> i64 {
    crate::runtime::now_ms()
}

/// A checkpoint committed its transaction.
#[derive(Debug)]
pub struct CheckpointCompleted<'a> {
    /// The checkpoint.
    pub report: &'a CheckpointReport,
    /// Its output and offsets went through a Kafka transaction.
    pub transactional: bool,
    /// When it completed, epoch ms.
    pub at_ms: i64,
}

impl Emit for CheckpointCompleted<'_> {
    fn emit(self, m: &Metrics) {
        let r = self.report;
        tracing::debug!(
            checkpoint = r.id,
            snapshots = r.snapshots,
            bytes = r.bytes,
            duration_ms = r.duration.as_millis() as u64,
            "checkpoint committed"
        );
        m.checkpoints.inc();
        m.checkpoint_duration_ms
            .set(i64::try_from(r.duration.as_millis()).unwrap_or(i64::MAX));
        m.checkpoint_bytes
            .set(i64::try_from(r.bytes).unwrap_or(i64::MAX));
        m.last_checkpoint_timestamp_seconds.set(self.at_ms / 1000);
        if self.transactional {
            m.transactions
                .get_or_create(&OutcomeLabel { outcome: "commit" })
                .inc();
        }
    }
}

/// A checkpoint (or the way back to the last one) failed; the worker retries after `retry_in`.
#[derive(Debug)]
pub struct CheckpointFailed<'a> {
    /// Why.
    pub error: &'a RuntimeError,
    /// When the next attempt starts.
    pub retry_in: Duration,
}

impl Emit for CheckpointFailed<'_> {
    fn emit(self, m: &Metrics) {
        tracing::warn!(
            error = %self.error,
            system = self.error.system(),
            retry_in_ms = self.retry_in.as_millis() as u64,
            "checkpoint failed; going back to the last completed checkpoint and retrying"
        );
        m.checkpoint_failures
            .get_or_create(&ReasonLabel {
                reason: self.error.system(),
            })
            .inc();
        m.retrying.set(1);
    }
}

/// The worker went back to its last completed checkpoint after a failure.
#[derive(Debug)]
pub struct WentBack;

impl Emit for WentBack {
    fn emit(self, _: &Metrics) {
        tracing::info!("went back to the last checkpoint; processing again");
    }
}

/// A checkpoint completed after failures: the worker is no longer retrying.
#[derive(Debug)]
pub struct Recovered;

impl Emit for Recovered {
    fn emit(self, m: &Metrics) {
        tracing::info!("checkpoint completed; recovered");
        m.retrying.set(0);
    }
}

/// The open transaction was aborted: its output is never read by `read_committed` consumers.
#[derive(Debug)]
pub struct TransactionAborted;

impl Emit for TransactionAborted {
    fn emit(self, m: &Metrics) {
        tracing::debug!("transaction aborted");
        m.transactions
            .get_or_create(&OutcomeLabel { outcome: "abort" })
            .inc();
    }
}

/// The consumer reported an error that librdkafka retries on its own.
#[derive(Debug)]
pub struct ConsumerError<'a> {
    /// The error.
    pub error: &'a rdkafka::error::KafkaError,
}

impl Emit for ConsumerError<'_> {
    fn emit(self, m: &Metrics) {
        static LOG: RateLimit = RateLimit::new(Duration::from_secs(10));
        m.consumer_errors.inc();
        if let Some(held_back) = LOG.admit(now_ms()) {
            tracing::warn!(error = %self.error, held_back, "consumer error; librdkafka retries");
        }
    }
}

/// The connection to a broker was lost; librdkafka reports it once in its own log and
/// reconnects.
#[derive(Debug)]
pub struct BrokerConnectionLost<'a> {
    /// The error.
    pub error: &'a rdkafka::error::KafkaError,
}

impl Emit for BrokerConnectionLost<'_> {
    fn emit(self, m: &Metrics) {
        m.consumer_errors.inc();
        tracing::debug!(error = %self.error, "broker connection lost; librdkafka reconnects");
    }
}

/// An old snapshot could not be deleted: it stays behind as garbage, nothing else.
#[derive(Debug)]
pub struct SnapshotDisposalFailed<'a> {
    /// Why.
    pub error: &'a crate::checkpoint::store::StoreError,
}

impl Emit for SnapshotDisposalFailed<'_> {
    fn emit(self, _: &Metrics) {
        static LOG: RateLimit = RateLimit::new(Duration::from_secs(60));
        if let Some(held_back) = LOG.admit(now_ms()) {
            tracing::warn!(error = %self.error, held_back, "failed to dispose of an old snapshot");
        }
    }
}

/// A snapshot's window state did not fit the pipeline and `upgrade.discardIncompatibleState`
/// let the task start empty.
#[derive(Debug)]
pub struct StateDiscarded<'a> {
    /// The partition's topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: i32,
    /// Why the state did not fit.
    pub reason: &'a str,
}

impl Emit for StateDiscarded<'_> {
    fn emit(self, _: &Metrics) {
        tracing::warn!(
            topic = self.topic,
            partition = self.partition,
            reason = self.reason,
            "the window state does not fit the new pipeline; starting it empty (upgrade.discardIncompatibleState)"
        );
    }
}

/// The worker took a stop-with-savepoint and processes nothing more.
#[derive(Debug)]
pub struct StoppedWithSavepoint<'a> {
    /// The savepoint's id.
    pub id: &'a str,
}

impl Emit for StoppedWithSavepoint<'_> {
    fn emit(self, _: &Metrics) {
        tracing::info!(
            savepoint = self.id,
            "stopped with a savepoint; idle until replaced"
        );
    }
}

/// A savepoint's objects were deleted from storage on the operator's request.
#[derive(Debug)]
pub struct SavepointDisposed<'a> {
    /// The savepoint's id.
    pub id: &'a str,
    /// Objects deleted.
    pub objects: usize,
}

impl Emit for SavepointDisposed<'_> {
    fn emit(self, _: &Metrics) {
        tracing::info!(savepoint = %self.id, objects = self.objects, "disposed of a savepoint");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limit_lets_one_line_through_per_interval_and_counts_the_rest() {
        let limit = RateLimit::new(Duration::from_secs(10));
        assert_eq!(limit.admit(1_000), Some(0));
        assert_eq!(limit.admit(2_000), None);
        assert_eq!(limit.admit(10_999), None);
        assert_eq!(limit.admit(11_000), Some(2));
        assert_eq!(limit.admit(11_001), None);
        assert_eq!(limit.admit(30_000), Some(1));
    }
}
