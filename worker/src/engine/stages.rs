//! A pipeline split at its repartition point.
//!
//! When a pipeline keys records by something other than the source partitioning, it runs as two
//! stages joined by the job's shuffle topic (DESIGN §3, "Kafka is the shuffle"):
//!
//! - the **source stage** runs the steps before the `keyBy` on each source partition and writes
//!   every surviving row to the shuffle topic, keyed by the `keyBy` value (so the producer's
//!   partitioner sends one key to one shuffle partition) and timestamped with its event time;
//! - the **shuffle stage** runs the `keyBy` and everything after it on each shuffle partition,
//!   reading the event time from the Kafka timestamp the source stage wrote.
//!
//! Both stages' output and both stages' input offsets go into the same Kafka transaction, so a
//! crash replays both or neither.

use std::sync::Arc;

use oxbow_crds::{
    pipeline::{Pipeline, Step},
    streamjob::Format,
    validation::{EventTime, ValidatedSpec},
};

use super::task::{CompileError, CompiledPipeline};

/// The compiled stages of a job.
#[derive(Debug, Clone)]
pub struct Stages {
    /// Runs on the source topics' partitions.
    pub source: Arc<CompiledPipeline>,
    /// Runs on the shuffle topic's partitions, when the pipeline repartitions.
    pub shuffle: Option<Arc<CompiledPipeline>>,
}

impl Stages {
    /// Compiles a validated spec, split at its repartition point if it has one.
    pub fn compile(
        spec: &ValidatedSpec,
        source_format: Format,
        sink_format: Format,
    ) -> Result<Self, CompileError> {
        let shape = oxbow_crds::state_shape::state_shape(&spec.pipeline);
        let Some((before, after)) = split(spec) else {
            return Ok(Stages {
                source: Arc::new(
                    CompiledPipeline::compile(spec, source_format, sink_format)?
                        .with_state_shape(shape),
                ),
                shuffle: None,
            });
        };
        Ok(Stages {
            source: Arc::new(CompiledPipeline::compile(
                &before,
                source_format,
                Format::Json,
            )?),
            shuffle: Some(Arc::new(
                CompiledPipeline::compile(&after, Format::Json, sink_format)?
                    .with_state_shape(shape),
            )),
        })
    }
}

/// Splits a spec that repartitions into the spec of the source stage and that of the shuffle
/// stage; `None` when the pipeline runs in one stage.
pub fn split(spec: &ValidatedSpec) -> Option<(ValidatedSpec, ValidatedSpec)> {
    let at = spec.pipeline.shuffle_after?;
    let Some(Step::KeyBy { expression, .. }) = spec.pipeline.steps.get(at) else {
        return None;
    };
    let before = ValidatedSpec {
        pipeline: Pipeline {
            steps: spec.pipeline.steps[..at].to_vec(),
            shuffle_after: None,
        },
        sink_key: Some(expression.clone()),
        ..spec.clone()
    };
    let after = ValidatedSpec {
        pipeline: Pipeline {
            steps: spec.pipeline.steps[at..].to_vec(),
            shuffle_after: None,
        },
        event_time: EventTime {
            field: None,
            ..spec.event_time.clone()
        },
        ..spec.clone()
    };
    Some((before, after))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use oxbow_crds::validation;

    use super::*;
    use crate::engine::{InputRecord, Output, Task};

    fn spec(partitioned_by: Option<&str>) -> (oxbow_crds::streamjob::StreamJobSpec, ValidatedSpec) {
        let mut job = oxbow_crds::parse_manifest(
            r#"
apiVersion: oxbow.dev/v1alpha1
kind: StreamJob
metadata: {name: t}
spec:
  kafka: {bootstrapServers: "k:9092"}
  source:
    topics: [in]
    eventTime: {field: ts, grace: 0s}
  pipeline:
    - filter: "amount > 0"
    - keyBy: "account"
    - window: {tumbling: 10s}
      aggregate: {total: "sum(amount)"}
  sink: {topic: out}
  checkpoint: {storage: "file:///tmp/unused"}
"#,
        )
        .unwrap()
        .spec;
        job.source.partitioned_by = partitioned_by.map(str::to_owned);
        let valid = validation::validate(&job).unwrap();
        (job, valid)
    }

    #[test]
    fn a_pipeline_partitioned_by_its_key_runs_in_one_stage() {
        let (job, valid) = spec(Some("account"));
        let stages = Stages::compile(&valid, job.source.format, job.sink.format).unwrap();
        assert!(stages.shuffle.is_none());
    }

    /// The two stages chained by hand give what the single-stage pipeline gives when every
    /// record of a key is in one partition.
    #[test]
    fn two_stages_compute_what_one_stage_computes() {
        let (job, valid) = spec(None);
        let stages = Stages::compile(&valid, job.source.format, job.sink.format).unwrap();
        let shuffle = stages.shuffle.clone().unwrap();
        let single = Arc::new(
            CompiledPipeline::compile(&valid, job.source.format, job.sink.format).unwrap(),
        );

        let inputs: Vec<String> = (0..40)
            .map(|i| {
                format!(
                    r#"{{"account":"a{}","amount":{},"ts":{}}}"#,
                    i % 3,
                    i % 5,
                    i * 700
                )
            })
            .collect();
        let feed = |task: &mut Task, out: &mut Output, value: &[u8], ts: Option<i64>| {
            task.process(
                &InputRecord {
                    value: Some(value),
                    timestamp_ms: ts,
                    ..Default::default()
                },
                out,
            );
        };

        let mut one = Task::new(single);
        let mut expected = Output::default();
        for v in &inputs {
            feed(&mut one, &mut expected, v.as_bytes(), None);
        }
        one.finish(&mut expected);

        let mut first = Task::new(Arc::clone(&stages.source));
        let mut second = Task::new(shuffle);
        let mut shuffled = Output::default();
        let mut got = Output::default();
        for v in &inputs {
            feed(&mut first, &mut shuffled, v.as_bytes(), None);
        }
        assert!(
            shuffled.records.iter().all(|r| r.key.is_some()),
            "shuffle records are keyed"
        );
        for r in std::mem::take(&mut shuffled.records) {
            feed(&mut second, &mut got, &r.value, Some(r.timestamp_ms));
        }
        second.finish(&mut got);
        assert!(!expected.records.is_empty());
        assert_eq!(got.records, expected.records);
    }
}
