//! The error policy: after a failed checkpoint, abort the open transaction, go back to the last
//! completed checkpoint and process again, backing off between attempts. Output of a failed
//! transaction is never committed.

use std::time::{Duration, Instant};

use rdkafka::producer::Producer;

use super::{RuntimeError, Worker, error::kafka};
use crate::events::{CheckpointFailed, Emit, TransactionAborted};

/// Backoff between attempts to recover from a failed checkpoint.
#[derive(Debug, Clone, Copy)]
pub(super) struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(30);

    pub(super) fn new() -> Self {
        Backoff { next: Self::FIRST }
    }

    /// The delay before the next attempt; doubles each time up to [`Backoff::MAX`].
    pub(super) fn step(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }
}

impl Worker {
    /// Records a transient failure: logs it, counts it, and schedules the next attempt to go
    /// back to the last checkpoint. Output of the failed transaction is never committed.
    pub(super) fn failed(&mut self, error: &RuntimeError, backoff: &mut Backoff) -> Instant {
        let delay = backoff.step();
        CheckpointFailed {
            error,
            retry_in: delay,
        }
        .emit(&self.metrics);
        self.last_error = Some(error.to_string());
        Instant::now() + delay
    }

    /// After a failed checkpoint: abort the open transaction, if one is open, and go back to
    /// the last committed checkpoint (state and offsets), so that the records since are
    /// processed again. Safe to call again after it failed part-way — also when the failure
    /// came after the transaction was aborted, before a new one began.
    pub(super) fn recover(&mut self) -> Result<(), RuntimeError> {
        if self.exactly_once && self.transaction_open {
            self.producer
                .abort_transaction(self.config.kafka_timeout)
                .map_err(kafka("abort the transaction"))?;
            TransactionAborted.emit(&self.metrics);
            self.transaction_open = false;
        }
        // Drop output produced for the aborted transaction but not yet handed to librdkafka.
        self.output.clear();
        self.restore()?;
        if self.exactly_once {
            self.producer
                .begin_transaction()
                .map_err(kafka("begin a transaction"))?;
            self.transaction_open = true;
        }
        self.last_checkpoint = Instant::now();
        Ok(())
    }
}
