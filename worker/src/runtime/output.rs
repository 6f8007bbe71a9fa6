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
    message::{BorrowedMessage, Header, Headers, OwnedHeaders},
    producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer},
};

use super::{RuntimeError, error::kafka};
use crate::engine::{Output, Upstream};

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
        upstream: None,
        results,
        shuffle: shuffle.is_some_and(|s| s != topic),
        dead_letters: job.spec.dead_letter.as_ref().map(|d| d.topic.as_str()),
    }
}

/// The header carrying a shuffled record's event time (8 bytes, big-endian epoch ms). The Kafka
/// timestamp would do only until a broker or topic uses `LogAppendTime`.
const EVENT_TIME_HEADER: &str = "oxbow.event-time";
/// The source partition that wrote a shuffled record or progress report (`<topic>/<partition>`).
const UPSTREAM_HEADER: &str = "oxbow.upstream";
/// That source partition's stream time when it wrote (8 bytes, big-endian epoch ms); absent
/// while it has none.
const STREAM_TIME_HEADER: &str = "oxbow.stream-time";
/// Only on progress reports (no value): `1` when the source partition is idle, else `0`.
const IDLE_HEADER: &str = "oxbow.idle";

/// What a record of the shuffle topic carries in its headers.
#[derive(Debug, Clone, Copy)]
pub(super) struct ShuffleHeaders<'a> {
    /// The event time of a shuffled record (its Kafka timestamp when the header is missing).
    pub event_time: Option<i64>,
    /// The progress of the source partition that wrote it.
    pub upstream: Option<Upstream<'a>>,
    /// A progress report, not a record: nothing to process.
    pub progress_only: bool,
}

/// Reads the headers the source stage writes on the shuffle topic.
pub(super) fn shuffle_headers<'a>(message: &'a BorrowedMessage<'_>) -> ShuffleHeaders<'a> {
    let (mut event_time, mut id, mut stream_time, mut idle) = (None, None, None, None);
    let be_i64 = |v: Option<&[u8]>| {
        v.and_then(|v| <[u8; 8]>::try_from(v).ok())
            .map(i64::from_be_bytes)
    };
    if let Some(headers) = message.headers() {
        for h in headers.iter() {
            match h.key {
                EVENT_TIME_HEADER => event_time = be_i64(h.value),
                STREAM_TIME_HEADER => stream_time = be_i64(h.value),
                UPSTREAM_HEADER => id = h.value.and_then(|v| std::str::from_utf8(v).ok()),
                IDLE_HEADER => idle = Some(h.value == Some(b"1")),
                _ => {}
            }
        }
    }
    ShuffleHeaders {
        event_time: event_time.or_else(|| message.timestamp().to_millis()),
        upstream: id.map(|id| Upstream {
            id,
            stream_time,
            idle: idle.unwrap_or(false),
        }),
        progress_only: idle.is_some(),
    }
}

/// Writes `upstream`'s progress to every partition of the shuffle topic, so that each shuffle
/// task hears of it even when no record of that source partition's keys goes its way.
pub(super) fn send_progress(
    producer: &ThreadedProducer<DeliveryTracker>,
    topic: &str,
    partitions: &[i32],
    upstream: &Upstream<'_>,
) -> Result<(), RuntimeError> {
    let stream_time = upstream.stream_time.map(i64::to_be_bytes);
    for &partition in partitions {
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: UPSTREAM_HEADER,
                value: Some(upstream.id),
            })
            .insert(Header {
                key: IDLE_HEADER,
                value: Some(if upstream.idle { "1" } else { "0" }),
            });
        if let Some(t) = &stream_time {
            headers = headers.insert(Header {
                key: STREAM_TIME_HEADER,
                value: Some(&t[..]),
            });
        }
        let record = BaseRecord::<[u8], [u8]>::to(topic)
            .partition(partition)
            .headers(headers);
        send(producer, record)?;
    }
    Ok(())
}

/// The topics a task's output goes to.
#[derive(Debug, Clone, Copy)]
pub(super) struct Destination<'a> {
    /// For results to the shuffle topic: the progress of the source partition they come from.
    pub upstream: Option<Upstream<'a>>,
    results: &'a str,
    /// Results go to the shuffle topic.
    pub shuffle: bool,
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
            let mut headers = OwnedHeaders::new().insert(Header {
                key: EVENT_TIME_HEADER,
                value: Some(&event_time[..]),
            });
            let stream_time = to
                .upstream
                .and_then(|u| u.stream_time)
                .map(i64::to_be_bytes);
            if let Some(upstream) = &to.upstream {
                headers = headers.insert(Header {
                    key: UPSTREAM_HEADER,
                    value: Some(upstream.id),
                });
            }
            if let Some(t) = &stream_time {
                headers = headers.insert(Header {
                    key: STREAM_TIME_HEADER,
                    value: Some(&t[..]),
                });
            }
            r = r.headers(headers);
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
