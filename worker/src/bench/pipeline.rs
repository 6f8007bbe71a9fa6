//! `oxbow-worker bench pipeline`: the reference job run in process, for side-by-side
//! comparison with Apache Flink running the same job (see `bench/`).
//!
//! Events come from the [reference generator](super::reference). Each event is JSON-encoded,
//! then the task decodes it, keeps `amount >= 100`, keys by `key`, and counts and sums `amount`
//! in 1 s tumbling windows; result rows are JSON-encoded and discarded after being added to the
//! checksum.

use std::{sync::Arc, time::Instant};

use oxbow_crds::{streamjob::Format, validation};

use super::{
    BenchError,
    reference::{Generator, REFERENCE_JOB, encode_event},
};
use crate::engine::{CompiledPipeline, InputRecord, Output, Task, codec};

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
    fn add(&mut self, output: &Output) -> Result<(), BenchError> {
        for record in &output.records {
            let row = codec::decode_json_value(&record.value)
                .map_err(|e| BenchError::Result(e.to_string()))?;
            let crate::engine::Value::Map(fields) = row else {
                return Err(BenchError::Result("a result is not an object".into()));
            };
            let field = |name: &str| match fields.get(name) {
                Some(crate::engine::Value::Int(i)) => {
                    u64::try_from(*i).map_err(|_| BenchError::Result(format!("negative {name}")))
                }
                other => Err(BenchError::Result(format!(
                    "result field {name} is {other:?}"
                ))),
            };
            self.rows += 1;
            self.count += field("count")?;
            self.sum += field("sum")?;
        }
        if let Some(d) = output.dead_letters.first() {
            return Err(BenchError::Result(format!(
                "the reference job dead-lettered a record: {d:?}"
            )));
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
pub fn reference_pipeline() -> Result<Arc<CompiledPipeline>, BenchError> {
    let invalid = |e: &dyn std::fmt::Display| BenchError::ReferenceJob(e.to_string());
    let job = oxbow_crds::parse_manifest(REFERENCE_JOB).map_err(|e| invalid(&e))?;
    let valid = validation::validate(&job.spec).map_err(|e| invalid(&e))?;
    CompiledPipeline::compile(&valid, Format::Json, Format::Json)
        .map(Arc::new)
        .map_err(|e| invalid(&e))
}

/// Runs the reference job over `events` generated events.
pub fn run(events: u64) -> Result<Report, BenchError> {
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
        task.process(&record, &mut output);
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
    use crate::bench::reference::SplitMix64;

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
        let report = run(1_200_000).unwrap();
        assert_eq!(report.checksum, naive(1_200_000));
        assert!(report.checksum.rows > 19_000, "{:?}", report.checksum);
    }
}
