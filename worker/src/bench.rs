//! `oxbow-worker bench pipeline`: the reference job run in process, for side-by-side
//! comparison with Apache Flink running the same job (see `bench/`).
//!
//! Generator (shared with the Flink job bit for bit): splitmix64 seeded with 42; event `i`
//! takes two outputs `r1`, `r2`: `key = r1 % 10000`, `amount = r2 % 1000`, `ts = i / 1000`
//! (1,000,000 events per event-time second). Each event is JSON-encoded, then the task decodes
//! it, keeps `amount >= 100`, keys by `key`, and counts and sums `amount` in 1 s tumbling
//! windows; result rows are JSON-encoded and discarded after being added to the checksum.

use std::{sync::Arc, time::Instant};

use oxbow_crds::{streamjob::Format, validation};

use crate::engine::{CompiledPipeline, InputRecord, Output, Task, codec};

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

/// Checksum of window results.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checksum {
    /// Window rows.
    pub rows: u64,
    /// Sum of counts.
    pub count: u64,
    /// Sum of sums.
    pub sum: u64,
}

impl Checksum {
    fn add(&mut self, output: &Output) -> Result<(), String> {
        for record in &output.records {
            let row = codec::decode_json_value(&record.value).map_err(|e| e.to_string())?;
            let crate::engine::Value::Map(fields) = row else {
                return Err("a result is not an object".into());
            };
            let field = |name: &str| match fields.get(name) {
                Some(crate::engine::Value::Int(i)) => {
                    u64::try_from(*i).map_err(|_| format!("negative {name}"))
                }
                other => Err(format!("result field {name} is {other:?}")),
            };
            self.rows += 1;
            self.count += field("count")?;
            self.sum += field("sum")?;
        }
        if let Some(d) = output.dead_letters.first() {
            return Err(format!("the reference job dead-lettered a record: {d:?}"));
        }
        Ok(())
    }
}

/// The result of one run.
#[derive(Clone, Copy, Debug)]
pub struct Report {
    /// Events generated.
    pub events: u64,
    /// Process CPU seconds.
    pub cpu_seconds: f64,
    /// Wall seconds.
    pub wall_seconds: f64,
    /// Results.
    pub checksum: Checksum,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "engine=oxbow events={} cpu_seconds={:.3} events_per_cpu_second={:.0} wall_seconds={:.3} rows={} count={} sum={}",
            self.events,
            self.cpu_seconds,
            self.events as f64 / self.cpu_seconds.max(1e-9),
            self.wall_seconds,
            self.checksum.rows,
            self.checksum.count,
            self.checksum.sum
        )
    }
}

/// The compiled reference pipeline.
pub fn reference_pipeline() -> Result<Arc<CompiledPipeline>, String> {
    let job = oxbow_crds::parse_manifest(REFERENCE_JOB).map_err(|e| e.to_string())?;
    let valid = validation::validate(&job.spec).map_err(|e| e.to_string())?;
    CompiledPipeline::compile(&valid, Format::Json, Format::Json)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// Runs the reference job over `events` generated events.
pub fn run_pipeline(events: u64) -> Result<Report, String> {
    let pipeline = reference_pipeline()?;
    let mut task = Task::new(pipeline);
    let mut generator = Generator::new();
    let mut checksum = Checksum::default();
    let mut value = Vec::with_capacity(64);
    let mut output = Output::default();
    let cpu = cpu_time::ProcessTime::now();
    let wall = Instant::now();
    for i in 0..events {
        let event = generator.next_event();
        value.clear();
        encode_event(&mut value, &event);
        let record = InputRecord {
            value: Some(&value),
            offset: i as i64,
            ..Default::default()
        };
        task.process(&record, 0, &mut output);
        if !output.records.is_empty() || !output.dead_letters.is_empty() {
            checksum.add(&output)?;
            output.clear();
        }
    }
    task.finish(&mut output);
    checksum.add(&output)?;
    Ok(Report {
        events,
        cpu_seconds: cpu.elapsed().as_secs_f64(),
        wall_seconds: wall.elapsed().as_secs_f64(),
        checksum,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same checksum computed without the engine: a straight recomputation.
    fn naive(events: u64) -> Checksum {
        let mut g = Generator::new();
        let mut windows = std::collections::BTreeSet::new();
        let mut c = Checksum::default();
        for _ in 0..events {
            let e = g.next_event();
            if e.amount >= 100 {
                windows.insert((e.ts / 1000, e.key));
                c.count += 1;
                c.sum += e.amount;
            }
        }
        c.rows = windows.len() as u64;
        c
    }

    #[test]
    fn splitmix64_matches_its_reference_values() {
        // Reference outputs of splitmix64 seeded with 0 (Vigna's splitmix64.c).
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn the_reference_job_computes_the_naive_checksum() {
        // 1.2 s of event time: two windows, the first fired by stream time, the second at the end.
        let report = run_pipeline(1_200_000).unwrap();
        assert_eq!(report.checksum, naive(1_200_000));
        assert!(report.checksum.rows > 19_000, "{:?}", report.checksum);
    }
}
