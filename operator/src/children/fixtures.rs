//! A StreamJob and job file as the controller would hand them to the builders.

use std::collections::BTreeMap;

use oxbow_crds::{
    StreamJob,
    assignment::assign,
    jobfile::{JobFile, Restore},
};

use super::WorkerDefaults;

const MANIFEST: &str = r#"
apiVersion: oxbow.dev/v1alpha1
kind: StreamJob
metadata:
  name: fraud
  namespace: payments
  uid: 9f1c0a52-1b7e-4f0e-a9a3-6a3d2c1e0b77
  generation: 4
spec:
  image: registry.example/oxbow-worker:0.2.0
  replicas: 3
  kafka:
    bootstrapServers: kafka:9092
    security:
      protocol: SASL_SSL
      mechanism: SCRAM-SHA-512
      secretRef: {name: kafka-creds}
  source:
    topics: [payments]
  pipeline:
    - filter: "amount > 100.0"
    - keyBy: "account"
  sink:
    topic: alerts
  checkpoint:
    storage: s3://bucket/oxbow
    timeout: 90s
  template:
    resources:
      requests: {cpu: 500m, memory: 256Mi}
      limits: {memory: 512Mi}
    env:
      - {name: RUST_BACKTRACE, value: "1"}
      - {name: POD_NAME, value: "not-the-pod"}
    nodeSelector: {pool: streaming}
    tolerations:
      - {key: dedicated, operator: Equal, value: streaming, effect: NoSchedule}
    affinity:
      podAntiAffinity:
        preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            podAffinityTerm:
              topologyKey: kubernetes.io/hostname
              labelSelector: {matchLabels: {app.kubernetes.io/instance: fraud}}
    serviceAccountName: fraud-worker
    annotations: {prometheus.io/scrape: "true"}
    labels: {team: risk, app.kubernetes.io/instance: someone-else}
"#;

/// A stored StreamJob: name, namespace, uid, generation.
pub(crate) fn stream_job() -> StreamJob {
    oxbow_crds::parse_manifest(MANIFEST).expect("the fixture manifest parses")
}

/// The job file of [`stream_job`]'s current spec, 12 partitions over its 3 workers.
pub(crate) fn job_file() -> JobFile {
    let job = stream_job();
    let topics = BTreeMap::from([("payments".to_owned(), 12)]);
    JobFile::new(
        "payments",
        "fraud",
        4,
        job.spec.clone(),
        assign(&topics, 3, None),
        Restore::LatestCheckpoint,
    )
}

/// The operator's defaults.
pub(crate) fn defaults() -> WorkerDefaults {
    WorkerDefaults {
        image: "registry.example/oxbow-worker:0.1.0".to_owned(),
    }
}
