//! StreamJob manifests as the tests write them: the YAML a user would apply, built from the
//! parts tests vary. [`crate::windows::job`] is the worker tests' window job;
//! [`filter_job`] is the small job the operator tests deploy.

use anyhow::Context;
use oxbow_crds::{StreamJob, StreamJobSpec};

/// A StreamJob manifest: `metadata.name`, the spec's sections as YAML flow-map entries, and
/// whole spec lines for the rest.
#[derive(Clone, Debug)]
pub struct Manifest {
    name: String,
    replicas: Option<i32>,
    kafka: Vec<String>,
    source: Vec<String>,
    pipeline: Vec<String>,
    sink: String,
    checkpoint: Vec<String>,
    spec: Vec<String>,
}

impl Manifest {
    /// Job `name` reading `source_topic` on `bootstrap` into `sink_topic`, checkpointing to
    /// `storage`, with no pipeline step yet.
    pub fn new(
        name: &str,
        bootstrap: &str,
        source_topic: &str,
        sink_topic: &str,
        storage: &str,
    ) -> Self {
        Manifest {
            name: name.to_owned(),
            replicas: None,
            kafka: vec![format!("bootstrapServers: \"{bootstrap}\"")],
            source: vec![format!("topics: [{source_topic}]")],
            pipeline: Vec::new(),
            sink: sink_topic.to_owned(),
            checkpoint: vec![format!("storage: \"{storage}\"")],
            spec: Vec::new(),
        }
    }

    /// `spec.replicas` (the CRD's default otherwise).
    pub fn replicas(mut self, replicas: i32) -> Self {
        self.replicas = Some(replicas);
        self
    }

    /// An entry of `spec.kafka`, such as `security: {...}`.
    pub fn kafka(mut self, entry: &str) -> Self {
        self.kafka.push(entry.to_owned());
        self
    }

    /// An entry of `spec.source`, such as `eventTime: {field: ts}`.
    pub fn source(mut self, entry: &str) -> Self {
        self.source.push(entry.to_owned());
        self
    }

    /// A pipeline step, as a flow map's entries: `filter: "amount > 0"`.
    pub fn step(mut self, step: &str) -> Self {
        self.pipeline.push(step.to_owned());
        self
    }

    /// An entry of `spec.checkpoint`, such as `interval: 1s`.
    pub fn checkpoint(mut self, entry: &str) -> Self {
        self.checkpoint.push(entry.to_owned());
        self
    }

    /// A further spec field, as a flow-map entry: `savepoint: {onDelete: true}`.
    pub fn spec(mut self, entry: &str) -> Self {
        self.spec.push(entry.to_owned());
        self
    }

    /// The manifest as YAML.
    pub fn yaml(&self) -> String {
        let mut yaml = format!(
            "apiVersion: oxbow.dev/v1alpha1\nkind: StreamJob\nmetadata: {{name: {}}}\nspec:\n",
            self.name
        );
        if let Some(replicas) = self.replicas {
            yaml.push_str(&format!("  replicas: {replicas}\n"));
        }
        yaml.push_str(&format!("  kafka: {{{}}}\n", self.kafka.join(", ")));
        yaml.push_str(&format!("  source: {{{}}}\n", self.source.join(", ")));
        if !self.pipeline.is_empty() {
            yaml.push_str("  pipeline:\n");
            for step in &self.pipeline {
                yaml.push_str(&format!("    - {{{step}}}\n"));
            }
        }
        yaml.push_str(&format!("  sink: {{topic: {}}}\n", self.sink));
        yaml.push_str(&format!(
            "  checkpoint: {{{}}}\n",
            self.checkpoint.join(", ")
        ));
        for entry in &self.spec {
            yaml.push_str(&format!("  {entry}\n"));
        }
        yaml
    }

    /// The StreamJob, parsed as the API's clients parse a manifest.
    pub fn stream_job(&self) -> anyhow::Result<StreamJob> {
        oxbow_crds::parse_manifest(&self.yaml())
            .with_context(|| format!("failed to build StreamJob {}:\n{}", self.name, self.yaml()))
    }

    /// Its spec.
    pub fn job_spec(&self) -> anyhow::Result<StreamJobSpec> {
        Ok(self.stream_job()?.spec)
    }
}

/// A small valid job `name` with two replicas, reading `topic` (which must exist for it to
/// deploy) on `bootstrap` into `<topic>-out` through `filter`, with no repartitioning;
/// checkpoints named for S3, which nothing writes while no worker runs.
pub fn filter_job(name: &str, bootstrap: &str, topic: &str, filter: &str) -> Manifest {
    Manifest::new(
        name,
        bootstrap,
        topic,
        &format!("{topic}-out"),
        "s3://bucket/prefix",
    )
    .replicas(2)
    .step(&format!("filter: \"{filter}\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_job_reads_as_written() {
        let manifest = filter_job("clicks", "kafka:9092", "clicks", "amount > 0")
            .replicas(1)
            .source("eventTime: {field: ts}")
            .spec("savepoint: {onDelete: true}");
        assert_eq!(
            manifest.yaml(),
            "apiVersion: oxbow.dev/v1alpha1\nkind: StreamJob\nmetadata: {name: clicks}\nspec:\n  \
             replicas: 1\n  kafka: {bootstrapServers: \"kafka:9092\"}\n  \
             source: {topics: [clicks], eventTime: {field: ts}}\n  pipeline:\n    \
             - {filter: \"amount > 0\"}\n  sink: {topic: clicks-out}\n  \
             checkpoint: {storage: \"s3://bucket/prefix\"}\n  savepoint: {onDelete: true}\n"
        );
        let job = manifest.stream_job().unwrap();
        assert_eq!(job.spec.replicas, 1);
        assert_eq!(job.spec.pipeline[0].filter.as_deref(), Some("amount > 0"));
        assert!(job.spec.savepoint.on_delete);
        assert_eq!(job.spec.sink.topic, "clicks-out");
    }
}
