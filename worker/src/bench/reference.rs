//! The reference job of every benchmark, and its generator, shared bit for bit with the Flink
//! job in `bench/`.
//!
//! Generator: splitmix64 seeded with 42; event `i` takes two outputs `r1`, `r2`:
//! `key = r1 % 10000`, `amount = r2 % 1000`, `ts = i / 1000` (1,000,000 events per event-time
//! second), JSON-encoded as `{"key":K,"amount":A,"ts":T}`.

use std::collections::BTreeMap;

use oxbow_crds::{
    assignment::assign,
    jobfile::{JobFile, Restore},
};

use super::BenchError;

/// The reference job.
pub const REFERENCE_JOB: &str = r#"
apiVersion: oxbow.dev/v1alpha1
kind: StreamJob
metadata: {name: bench}
spec:
  kafka: {bootstrapServers: "127.0.0.1:9092"}
  source:
    topics: [events]
    eventTime: {field: ts, format: epochMillis, grace: 0s}
    partitionedBy: "key"
  pipeline:
    - filter: "amount >= 100"
    - keyBy: "key"
    - window: {tumbling: 1s}
      aggregate: {count: "count()", sum: "sum(amount)"}
  sink: {topic: results}
  checkpoint: {storage: "file:///tmp/oxbow-bench"}
"#;

/// The reference job reading `input` and writing `output` on `bootstrap`, checkpointing to the
/// local directory `storage` every `interval`.
pub fn reference_job_yaml(
    bootstrap: &str,
    input: &str,
    output: &str,
    storage: &std::path::Path,
    interval: &str,
) -> String {
    REFERENCE_JOB
        .replace("127.0.0.1:9092", bootstrap)
        .replace("topics: [events]", &format!("topics: [{input}]"))
        .replace(
            "sink: {topic: results}",
            &format!("sink: {{topic: {output}}}"),
        )
        .replace(
            "checkpoint: {storage: \"file:///tmp/oxbow-bench\"}",
            &format!(
                "checkpoint: {{storage: \"file://{}\", interval: {interval}}}",
                storage.display()
            ),
        )
}

/// splitmix64.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator with the given state.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next output.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// One generated event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// Key in 0..10000.
    pub key: u64,
    /// Amount in 0..1000.
    pub amount: u64,
    /// Event time, epoch ms.
    pub ts: u64,
}

/// The reference generator.
#[derive(Clone, Debug)]
pub struct Generator {
    rng: SplitMix64,
    next: u64,
}

impl Generator {
    /// The generator at event 0.
    pub fn new() -> Self {
        Generator {
            rng: SplitMix64::new(42),
            next: 0,
        }
    }

    /// Event `i`, advancing.
    pub fn next_event(&mut self) -> Event {
        let (r1, r2) = (self.rng.next_u64(), self.rng.next_u64());
        let event = Event {
            key: r1 % 10_000,
            amount: r2 % 1000,
            ts: self.next / 1000,
        };
        self.next += 1;
        event
    }
}

impl Default for Generator {
    fn default() -> Self {
        Self::new()
    }
}

/// Writes `{"key":K,"amount":A,"ts":T}`.
pub fn encode_event(out: &mut Vec<u8>, e: &Event) {
    let mut buf = itoa::Buffer::new();
    out.extend_from_slice(b"{\"key\":");
    out.extend_from_slice(buf.format(e.key).as_bytes());
    out.extend_from_slice(b",\"amount\":");
    out.extend_from_slice(buf.format(e.amount).as_bytes());
    out.extend_from_slice(b",\"ts\":");
    out.extend_from_slice(buf.format(e.ts).as_bytes());
    out.push(b'}');
}

/// The reference job as a one-worker job file named `name`, reading the single-partition topic
/// `input` (see [`reference_job_yaml`]).
pub(crate) fn reference_job_file(
    name: &str,
    bootstrap: &str,
    input: &str,
    output: &str,
    storage: &std::path::Path,
    interval: &str,
) -> Result<JobFile, BenchError> {
    let yaml = reference_job_yaml(bootstrap, input, output, storage, interval);
    let spec = oxbow_crds::parse_manifest(&yaml)
        .map_err(|e| BenchError::ReferenceJob(e.to_string()))?
        .spec;
    Ok(JobFile::new(
        "bench",
        name,
        1,
        spec,
        assign(&BTreeMap::from([(input.to_owned(), 1)]), 1, None),
        Restore::LatestCheckpoint,
    ))
}
