//! The worker's Prometheus metrics. Labels are bounded: reasons and outcomes are static
//! strings, partitions are the job's assignment. Counters of events are incremented where the
//! event is emitted ([`crate::events`]); per-partition record counts are published from the
//! tasks' counters by the processing loop.

use std::sync::Arc;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// Labels of per-reason counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Static reason.
    pub reason: &'static str,
}

/// Labels of transaction counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `commit` or `abort`.
    pub outcome: &'static str,
}

/// Labels of per-partition series (bounded by the job's assignment).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    /// Input topic.
    pub topic: String,
    /// Input partition.
    pub partition: i32,
}

/// The worker's metrics. Labels are bounded: reasons and outcomes are static strings.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Records consumed, per input partition.
    pub records_in: Family<PartitionLabel, Counter>,
    /// Records produced by the tasks of each input partition: to the sink, or to the shuffle
    /// topic for the source stage of a repartitioning pipeline.
    pub records_out: Family<PartitionLabel, Counter>,
    /// Next offset to consume, per input partition.
    pub consumer_position: Family<PartitionLabel, Gauge>,
    /// Checkpoints that failed, by the system that failed.
    pub checkpoint_failures: Family<ReasonLabel, Counter>,
    /// 1 while the worker backs off after a failed checkpoint, waiting for Kafka or the store.
    pub retrying: Gauge,
    /// Records dead-lettered, by reason.
    pub dead_lettered: Family<ReasonLabel, Counter>,
    /// Checkpoints completed.
    pub checkpoints: Counter,
    /// Duration of the last checkpoint, milliseconds.
    pub checkpoint_duration_ms: Gauge,
    /// Bytes written by the last checkpoint.
    pub checkpoint_bytes: Gauge,
    /// Completion time of the last checkpoint, epoch seconds.
    pub last_checkpoint_timestamp_seconds: Gauge,
    /// Kafka transactions, by outcome.
    pub transactions: Family<OutcomeLabel, Counter>,
    /// Bytes of task state held.
    pub state_bytes: Gauge,
    /// Errors the consumer reported and librdkafka retries on its own.
    pub consumer_errors: Counter,
}

impl Metrics {
    /// A registry exporting these metrics under the `oxbow_worker` prefix.
    pub fn registry(self: &Arc<Self>) -> Registry {
        let mut r = Registry::with_prefix("oxbow_worker");
        r.register(
            "records_in",
            "Records consumed, per input partition",
            self.records_in.clone(),
        );
        r.register(
            "records_out",
            "Records produced by each input partition's task (to the sink, or to the shuffle topic from a source stage)",
            self.records_out.clone(),
        );
        r.register(
            "consumer_position",
            "Next offset to consume, per input partition",
            self.consumer_position.clone(),
        );
        r.register(
            "checkpoint_failures",
            "Checkpoints that failed and were retried, by the system that failed",
            self.checkpoint_failures.clone(),
        );
        r.register(
            "retrying",
            "1 while backing off after a failed checkpoint",
            self.retrying.clone(),
        );
        r.register(
            "dead_lettered",
            "Records sent to the dead-letter topic, by reason",
            self.dead_lettered.clone(),
        );
        r.register(
            "checkpoints",
            "Checkpoints completed",
            self.checkpoints.clone(),
        );
        r.register(
            "checkpoint_duration_ms",
            "Duration of the last checkpoint",
            self.checkpoint_duration_ms.clone(),
        );
        r.register(
            "checkpoint_bytes",
            "Snapshot bytes written by the last checkpoint",
            self.checkpoint_bytes.clone(),
        );
        r.register(
            "last_checkpoint_timestamp_seconds",
            "When the last checkpoint completed",
            self.last_checkpoint_timestamp_seconds.clone(),
        );
        r.register(
            "transactions",
            "Kafka transactions by outcome",
            self.transactions.clone(),
        );
        r.register(
            "state_bytes",
            "Bytes of window state held",
            self.state_bytes.clone(),
        );
        r.register(
            "consumer_errors",
            "Errors the Kafka consumer reported (librdkafka retries them)",
            self.consumer_errors.clone(),
        );
        r
    }
}
