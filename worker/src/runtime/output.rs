//! Output: a task's results and dead letters produced into the open transaction, to the sink,
//! the shuffle topic or the dead-letter topic, and delivery failures counted so that a
//! checkpoint never commits over lost output.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use oxbow_crds::jobfile::JobFile;
use rdkafka::{
    ClientContext, Message,
    error::{KafkaError, RDKafkaErrorCode},
    message::{Header, OwnedHeaders},
    producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer},
};

use super::{RuntimeError, error::kafka};
use crate::engine::Output;

/// Counts failed deliveries so that a checkpoint never commits over lost output.
#[derive(Debug, Default)]
pub struct DeliveryTracker {
    failed: AtomicU64,
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl DeliveryTracker {
    /// Failed deliveries since the last call.
    pub(super) fn take_failed(&self) -> u64 {
        self.failed.swap(0, Ordering::Relaxed)
    }
}

/// Where the output of the tasks of `topic` goes: source-stage results to the shuffle topic
/// when there is one, otherwise to the sink.
pub(super) fn destination<'a>(
    job: &'a JobFile,
    shuffle: Option<&'a str>,
    topic: &str,
) -> Destination<'a> {
    let results = match shuffle {
        Some(shuffle) if shuffle != topic => shuffle,
        _ => job.spec.sink.topic.as_str(),
    };
    Destination {
        results,
        shuffle: shuffle.is_some_and(|s| s != topic),
        dead_letters: job.spec.dead_letter.as_ref().map(|d| d.topic.as_str()),
    }
}

/// The header carrying a shuffled record's event time (8 bytes, big-endian epoch ms). The Kafka
/// timestamp would do only until a broker or topic uses `LogAppendTime`.
const EVENT_TIME_HEADER: &str = "oxbow.event-time";

/// The event time the source stage wrote with a shuffled record.
pub(super) fn shuffled_event_time(message: &rdkafka::message::BorrowedMessage<'_>) -> Option<i64> {
    use rdkafka::message::Headers;
    message
        .headers()?
        .iter()
        .find(|h| h.key == EVENT_TIME_HEADER)
        .and_then(|h| <[u8; 8]>::try_from(h.value?).ok())
        .map(i64::from_be_bytes)
        .or_else(|| message.timestamp().to_millis())
}

/// The topics a task's output goes to.
#[derive(Debug, Clone, Copy)]
pub(super) struct Destination<'a> {
    results: &'a str,
    /// Results go to the shuffle topic.
    shuffle: bool,
    dead_letters: Option<&'a str>,
}

/// Produces a task's results and dead letters into the open transaction.
pub(super) fn send_output(
    producer: &ThreadedProducer<DeliveryTracker>,
    to: Destination<'_>,
    output: &mut Output,
) -> Result<(), RuntimeError> {
    for record in output.records.drain(..) {
        let mut r = BaseRecord::<[u8], [u8]>::to(to.results)
            .payload(&record.value)
            .timestamp(record.timestamp_ms);
        if to.shuffle {
            let event_time = record.timestamp_ms.to_be_bytes();
            r = r.headers(OwnedHeaders::new().insert(Header {
                key: EVENT_TIME_HEADER,
                value: Some(&event_time[..]),
            }));
        }
        if let Some(key) = &record.key {
            r = r.key(key);
        }
        send(producer, r)?;
    }
    for d in output.dead_letters.drain(..) {
        let Some(topic) = to.dead_letters else {
            continue;
        };
        let offset = d.offset.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "oxbow.error.reason",
                value: Some(d.reason.as_str()),
            })
            .insert(Header {
                key: "oxbow.error.step",
                value: Some(&*d.step),
            })
            .insert(Header {
                key: "oxbow.error.message",
                value: Some(&d.message),
            })
            .insert(Header {
                key: "oxbow.source.offset",
                value: Some(&offset),
            });
        let mut r = BaseRecord::<[u8], [u8]>::to(topic).headers(headers);
        if let Some(v) = &d.value {
            r = r.payload(v);
        }
        if let Some(k) = &d.key {
            r = r.key(k);
        }
        send(producer, r)?;
    }
    Ok(())
}

fn send(
    producer: &ThreadedProducer<DeliveryTracker>,
    mut record: BaseRecord<'_, [u8], [u8]>,
) -> Result<(), RuntimeError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(kafka("produce a record")(e)),
        }
    }
}
