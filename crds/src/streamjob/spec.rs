//! `StreamJob.spec`: what the user declares.
//!
//! The wire types here are deliberately loose where the OpenAPI schema cannot express a rule
//! (durations are strings, pipeline steps are structs of optional fields): the schema and its
//! CEL rules reject what they can at admission, and [`crate::validation`] checks the rest with a
//! precise field path, so that an invalid spec never fails to deserialize inside the operator.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, EnvVar, ResourceRequirements, Toleration};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::StreamJobStatus;
use crate::duration::DurationString;

/// A stateful Kafka-to-Kafka stream-processing job run by Oxbow workers.
// Several printer columns share a type; clippy mistakes them for repeated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "oxbow.dev",
    version = "v1alpha1",
    kind = "StreamJob",
    plural = "streamjobs",
    singular = "streamjob",
    shortname = "sj",
    category = "oxbow",
    namespaced,
    status = "StreamJobStatus",
    derive = "PartialEq",
    doc = "A stateful Kafka-to-Kafka stream-processing job run by Oxbow workers.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Lifecycle phase of the job"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Desired number of workers"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Workers restored and processing"
    ),
    printcolumn(
        name = "Lag",
        type_ = "integer",
        json_path = ".status.lag.records",
        description = "Records behind the source high watermarks"
    ),
    printcolumn(
        name = "Last Checkpoint",
        type_ = "date",
        json_path = ".status.checkpoint.lastCompleted.completedAt",
        description = "When the last checkpoint completed"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[cfg_attr(test, kube(cel))]
#[x_kube(
    validation = Rule::new("self.sink.deliveryGuarantee != 'exactly-once' || has(self.checkpoint)")
        .message("sink.deliveryGuarantee exactly-once needs checkpoint.storage: exactly-once output is committed together with checkpointed state")
        .field_path(".checkpoint"),
    validation = Rule::new("self.upgrade.mode == 'stateless' || has(self.checkpoint)")
        .message("upgrade.mode savepoint and last-state need checkpoint.storage to keep state across upgrades; set checkpoint.storage or use upgrade.mode stateless")
        .field_path(".checkpoint"),
    validation = Rule::new("self.state == 'suspended' || self.replicas >= 1")
        .message("replicas must be at least 1 unless state is suspended")
        .field_path(".replicas"),
    validation = Rule::new("!has(self.deadLetter) || self.deadLetter.topic != self.sink.topic")
        .message("deadLetter.topic must differ from sink.topic")
        .field_path(".deadLetter.topic"),
    validation = Rule::new("!(self.sink.topic in self.source.topics)")
        .message("sink.topic must not be one of source.topics: the job would consume its own output")
        .field_path(".sink.topic")
)]
#[serde(rename_all = "camelCase")]
pub struct StreamJobSpec {
    /// Container image of the Oxbow worker. Defaults to the operator's configured worker image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// Number of worker pods. Source partitions are spread evenly across them. Scaled through
    /// the scale subresource (`kubectl scale sj/<name> --replicas=N`, HPA, KEDA).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,

    /// Desired run state: `running`, or `suspended` (take a savepoint and scale to zero).
    #[serde(default)]
    pub state: JobState,

    /// How to reach the Kafka cluster.
    pub kafka: KafkaSpec,

    /// The topics to consume and how to read their records.
    pub source: SourceSpec,

    /// Ordered processing steps. Expressions are CEL.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub pipeline: Vec<PipelineStep>,

    /// Where results are produced.
    pub sink: SinkSpec,

    /// Topic that receives records which could not be decoded or processed, or arrived too
    /// late, with the error in headers. Without it such records are counted and dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetterSpec>,

    /// Periodic checkpoints of the job's state to object storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointSpec>,

    /// How spec changes that need a restart (image, pipeline, Kafka settings, resources) and
    /// rescales are rolled out.
    #[serde(default)]
    pub upgrade: UpgradeSpec,

    /// Manual and periodic savepoints.
    #[serde(default)]
    pub savepoint: SavepointSpec,

    /// Restore the job's state from an explicit savepoint on its next (re)deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_from: Option<RestoreFromSpec>,

    /// Pod-level settings for the worker pods.
    #[serde(default)]
    pub template: PodTemplateSpec,
}

fn default_replicas() -> i32 {
    1
}

/// Desired run state of a job.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    /// Workers run and process records.
    #[default]
    Running,
    /// A savepoint is taken and the job is scaled to zero; resuming restores from it.
    Suspended,
}

/// Connection to the Kafka cluster.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSpec {
    /// Comma-separated `host:port` list of bootstrap brokers.
    #[schemars(length(min = 1, max = 2048))]
    pub bootstrap_servers: String,

    /// Authentication and encryption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<KafkaSecurity>,

    /// Additional librdkafka client properties, passed through as they are. Properties that
    /// Oxbow manages itself (group.id, transactional.id, isolation.level, enable.auto.commit,
    /// bootstrap.servers) are rejected.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}

/// Kafka authentication and encryption.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.mechanism) || has(self.secretRef)")
    .message("a SASL mechanism needs secretRef naming a Secret with the keys username and password"))]
#[serde(rename_all = "camelCase")]
pub struct KafkaSecurity {
    /// Security protocol.
    #[serde(default)]
    pub protocol: SecurityProtocol,
    /// SASL mechanism, for the SASL protocols.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mechanism: Option<SaslMechanism>,
    /// Secret holding the credentials: `username` and `password` for SASL, and optionally
    /// `ca.crt`, `tls.crt` and `tls.key` for TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretReference>,
}

/// Kafka security protocol.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(clippy::upper_case_acronyms)]
pub enum SecurityProtocol {
    /// No encryption, no authentication.
    #[default]
    #[serde(rename = "PLAINTEXT")]
    Plaintext,
    /// TLS.
    #[serde(rename = "SSL")]
    Ssl,
    /// SASL authentication without encryption.
    #[serde(rename = "SASL_PLAINTEXT")]
    SaslPlaintext,
    /// SASL authentication over TLS.
    #[serde(rename = "SASL_SSL")]
    SaslSsl,
}

/// SASL mechanism.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaslMechanism {
    /// Username and password in clear (use with SASL_SSL).
    #[serde(rename = "PLAIN")]
    Plain,
    /// SCRAM with SHA-256.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// SCRAM with SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

/// Reference to a Secret in the job's namespace.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct SecretReference {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The topics to consume.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SourceSpec {
    /// Topics to consume. All partitions of every topic are spread across the workers.
    #[schemars(
        length(min = 1, max = 32),
        inner(length(min = 1, max = 249), regex(pattern = r"^[a-zA-Z0-9._-]+$"))
    )]
    pub topics: Vec<String>,

    /// How record values are decoded.
    #[serde(default)]
    pub format: Format,

    /// Where to start in partitions that have no committed state yet. Resolved once, when a
    /// partition is first assigned, and committed with the first checkpoint.
    #[serde(default)]
    pub starting_offsets: StartingOffsets,

    /// With `startingOffsets: timestamp`, the time to start from (RFC 3339, such as
    /// `2026-12-01T00:00:00Z`): each partition starts at its first record whose Kafka timestamp
    /// is at or after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_timestamp: Option<String>,

    /// Event time of each record. Without it, the Kafka record timestamp is used with no grace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<EventTimeSpec>,

    /// CEL expression by which the source topics are already partitioned. When it equals the
    /// pipeline's `keyBy`, no repartition topic is needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub partitioned_by: Option<String>,
}

/// Record format.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A JSON object per record value.
    #[default]
    Json,
    /// The value as a UTF-8 string, available to expressions as `value`.
    String,
    /// The raw value bytes, available to expressions as `value`.
    Bytes,
}

/// Where to start consuming partitions without committed state.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StartingOffsets {
    /// From the oldest retained record.
    #[default]
    Earliest,
    /// From the end: only records produced after the job starts.
    Latest,
    /// From the first record at or after `startingTimestamp`.
    Timestamp,
}

/// How each record's event time is found, and how long to wait for late records.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EventTimeSpec {
    /// Field of the decoded record holding the event time. Without it, the Kafka record
    /// timestamp is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub field: Option<String>,

    /// How the field encodes time.
    #[serde(default)]
    pub format: TimeFormat,

    /// How long a window stays open for late records after stream time passed its end.
    #[serde(default = "DurationString::zero")]
    pub grace: DurationString,

    /// After this long without records, a partition's stream time advances with processing
    /// time, so that an idle partition never holds windows open.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: DurationString,
}

fn default_idle_timeout() -> DurationString {
    DurationString::from_static("30s")
}

/// Encoding of an event-time field.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum TimeFormat {
    /// Milliseconds since the Unix epoch, a number.
    #[default]
    EpochMillis,
    /// Seconds since the Unix epoch, a number (fractions allowed).
    EpochSeconds,
    /// An RFC 3339 timestamp string.
    Rfc3339,
}

/// One pipeline step. Exactly one of `filter`, `map`, `keyBy` and `window` is set; `aggregate`
/// goes with `window`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(
    validation = Rule::new("(has(self.filter) ? 1 : 0) + (has(self.map) ? 1 : 0) + (has(self.keyBy) ? 1 : 0) + (has(self.window) ? 1 : 0) == 1")
        .message("each pipeline step sets exactly one of filter, map, keyBy or window"),
    validation = Rule::new("has(self.window) == has(self.aggregate)")
        .message("aggregate goes with window: a window step needs aggregate, and only a window step may have it")
)]
#[serde(rename_all = "camelCase")]
pub struct PipelineStep {
    /// Keep only records for which this CEL expression is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub filter: Option<String>,

    /// Replace each record by a record with these fields, each computed by a CEL expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub map: Option<BTreeMap<String, String>>,

    /// Key records by this CEL expression (a field name is the simplest). Records are
    /// repartitioned by key unless `source.partitionedBy` says the source already is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub key_by: Option<String>,

    /// Group keyed records into event-time windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowSpec>,

    /// Aggregations computed per key and window: output field -> `count()`, `sum(expr)`,
    /// `min(expr)`, `max(expr)`, `avg(expr)`, `first(expr)`, `last(expr)` or
    /// `count_distinct(expr)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub aggregate: Option<BTreeMap<String, String>>,
}

/// A window. Exactly one of `tumbling`, `hopping` and `session` is set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("(has(self.tumbling) ? 1 : 0) + (has(self.hopping) ? 1 : 0) + (has(self.session) ? 1 : 0) == 1")
    .message("a window sets exactly one of tumbling, hopping or session"))]
#[serde(rename_all = "camelCase")]
pub struct WindowSpec {
    /// Fixed-size, non-overlapping windows of this length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tumbling: Option<DurationString>,
    /// Fixed-size windows that start every `slide`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hopping: Option<HoppingWindow>,
    /// Windows per key that close after a gap of inactivity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionWindow>,
}

/// Hopping (sliding) window.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct HoppingWindow {
    /// Length of each window.
    pub size: DurationString,
    /// Interval between window starts; at most `size`.
    pub slide: DurationString,
}

/// Session window.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct SessionWindow {
    /// Inactivity gap that closes a session.
    pub gap: DurationString,
}

/// Where results go.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SinkSpec {
    /// Topic the results are produced to.
    #[schemars(length(min = 1, max = 249), regex(pattern = r"^[a-zA-Z0-9._-]+$"))]
    pub topic: String,

    /// How result values are encoded.
    #[serde(default)]
    pub format: Format,

    /// CEL expression for the Kafka record key of each result. Without it, results carry the
    /// pipeline's key (or none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub key: Option<String>,

    /// Delivery guarantee towards `read_committed` consumers of the sink.
    #[serde(default)]
    pub delivery_guarantee: DeliveryGuarantee,
}

/// Delivery guarantee of the sink.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryGuarantee {
    /// Results and input offsets commit in one Kafka transaction with each checkpoint.
    #[default]
    ExactlyOnce,
    /// Idempotent producer; offsets commit after results are acknowledged. Duplicates are
    /// possible after a failure.
    AtLeastOnce,
}

/// Dead-letter output.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct DeadLetterSpec {
    /// Topic for records that failed, with headers `oxbow.error.reason`, `oxbow.error.step`
    /// and `oxbow.error.message`.
    #[schemars(length(min = 1, max = 249), regex(pattern = r"^[a-zA-Z0-9._-]+$"))]
    pub topic: String,
}

/// Checkpointing.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointSpec {
    /// Object storage URL under which checkpoints and savepoints are written: `s3://bucket/prefix`,
    /// `gs://bucket/prefix`, `az://container/prefix` or `file:///path`.
    #[schemars(
        length(min = 1, max = 1024),
        regex(pattern = r"^(s3|s3a|gs|az|azure|abfs|abfss|file)://.+")
    )]
    pub storage: String,

    /// Time between checkpoints. Output becomes visible to `read_committed` consumers at each
    /// checkpoint, so this is also the end-to-end latency of exactly-once results.
    #[serde(default = "default_checkpoint_interval")]
    pub interval: DurationString,

    /// Number of completed checkpoints kept in storage.
    #[serde(default = "default_retained")]
    #[schemars(range(min = 1, max = 100))]
    pub retained: i32,

    /// A checkpoint that takes longer than this is aborted and retried.
    #[serde(default = "default_checkpoint_timeout")]
    pub timeout: DurationString,
}

fn default_checkpoint_interval() -> DurationString {
    DurationString::from_static("10s")
}

fn default_retained() -> i32 {
    3
}

fn default_checkpoint_timeout() -> DurationString {
    DurationString::from_static("60s")
}

/// How restarts and rescales are rolled out.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeSpec {
    /// `savepoint`: stop every worker with a savepoint and restore from it. `last-state`:
    /// restore from the latest checkpoint. `stateless`: start from committed offsets with empty
    /// state.
    #[serde(default)]
    pub mode: UpgradeMode,

    /// How long the operator waits for the stop-with-savepoint to complete.
    #[serde(default = "default_savepoint_timeout")]
    pub savepoint_timeout: DurationString,

    /// What to do when the savepoint fails: `block` keeps the old generation running and sets
    /// the UpgradeBlocked condition; `last-state` continues from the last checkpoint if it is
    /// younger than `maxCheckpointAge`.
    #[serde(default)]
    pub on_savepoint_failure: SavepointFailurePolicy,

    /// Oldest checkpoint that `onSavepointFailure: last-state` may restore from.
    #[serde(default = "default_max_checkpoint_age")]
    pub max_checkpoint_age: DurationString,

    /// How long the new generation has to become ready before it is rolled back to the last
    /// stable spec.
    #[serde(default = "default_verify_timeout")]
    pub verify_timeout: DurationString,

    /// Start the window state empty when an upgrade changes it in a way it cannot be restored
    /// (a different window kind or size, key or repartitioning, an aggregation whose function
    /// or argument changed). Without it such an upgrade is refused with the UpgradeBlocked
    /// condition naming the step, and the job keeps running.
    #[serde(default)]
    pub discard_incompatible_state: bool,
}

impl Default for UpgradeSpec {
    fn default() -> Self {
        Self {
            mode: UpgradeMode::default(),
            savepoint_timeout: default_savepoint_timeout(),
            on_savepoint_failure: SavepointFailurePolicy::default(),
            max_checkpoint_age: default_max_checkpoint_age(),
            verify_timeout: default_verify_timeout(),
            discard_incompatible_state: false,
        }
    }
}

fn default_savepoint_timeout() -> DurationString {
    DurationString::from_static("120s")
}

fn default_max_checkpoint_age() -> DurationString {
    DurationString::from_static("5m")
}

fn default_verify_timeout() -> DurationString {
    DurationString::from_static("5m")
}

/// Upgrade mode.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum UpgradeMode {
    /// Stop with a savepoint, restore from it.
    #[default]
    Savepoint,
    /// Restore from the latest completed checkpoint.
    LastState,
    /// Start from committed offsets with empty state.
    Stateless,
}

/// What to do when an upgrade's savepoint fails.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SavepointFailurePolicy {
    /// Keep the old generation running and report UpgradeBlocked.
    #[default]
    Block,
    /// Continue from the last checkpoint if it is younger than `maxCheckpointAge`.
    LastState,
}

/// Manual and periodic savepoints.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SavepointSpec {
    /// Change this number to take a savepoint now.
    #[serde(default)]
    pub trigger_nonce: i64,

    /// Take a savepoint this often. Unset: no periodic savepoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<DurationString>,

    /// Number of savepoints kept; older ones are disposed from storage (never the one the job
    /// last restored from, nor the latest upgrade savepoint).
    #[serde(default = "default_history_limit")]
    #[schemars(range(min = 1, max = 1000))]
    pub history_limit: i32,

    /// Take a final savepoint when the StreamJob is deleted.
    #[serde(default)]
    pub on_delete: bool,
}

impl Default for SavepointSpec {
    fn default() -> Self {
        Self {
            trigger_nonce: 0,
            interval: None,
            history_limit: default_history_limit(),
            on_delete: false,
        }
    }
}

fn default_history_limit() -> i32 {
    10
}

/// Explicit restore source.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreFromSpec {
    /// Full object-storage URL of a savepoint directory written by Oxbow.
    #[schemars(length(min = 1, max = 2048))]
    pub savepoint_path: String,
}

/// Pod-level overrides for worker pods: a narrow, typed subset of a PodTemplateSpec.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateSpec {
    /// Compute resources of the worker container: `requests` and `limits` of `cpu` and
    /// `memory`, as in a Pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "resources_schema")]
    pub resources: Option<ResourceRequirements>,
    /// Extra environment variables of the worker container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Node selector of the worker pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the worker pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Affinity of the worker pods, as in a Pod's `spec.affinity` (`kubectl explain
    /// pod.spec.affinity`). Checked by the API server when the operator writes the StatefulSet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "affinity_schema")]
    pub affinity: Option<Affinity>,
    /// Service account of the worker pods. Workers need no Kubernetes API access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Extra annotations of the worker pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Extra labels of the worker pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

// The full schemas of Affinity (32 KB) and ResourceRequirements (7 KB) would make up most of the
// CRD; these compact ones keep it small. The API server validates both in full when the operator
// writes them into the StatefulSet, and the operator reports that error on the StreamJob.

fn affinity_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

fn resources_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "properties": {
            "limits": {
                "type": "object",
                "additionalProperties": {"x-kubernetes-int-or-string": true},
                "description": "Maximum resources, for example cpu: 2, memory: 512Mi."
            },
            "requests": {
                "type": "object",
                "additionalProperties": {"x-kubernetes-int-or-string": true},
                "description": "Guaranteed resources, for example cpu: 500m, memory: 256Mi."
            }
        }
    })
}
