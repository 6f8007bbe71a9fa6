//! Validation of a StreamJob spec beyond what the CRD schema can say, shared by the operator
//! (which reports errors as a condition and keeps the last valid spec running) and the worker
//! (which refuses to start on an invalid job).
//!
//! Every error names the exact field (`spec.pipeline[2].filter`) and says what to do.
//! A successful validation returns the typed form of the spec that the worker runs.

use std::{collections::BTreeSet, fmt, time::Duration};

use crate::{
    duration::DurationString,
    pipeline::{
        Aggregate, Expression, FUNCTIONS, Pipeline, Step, WINDOW_END_FIELD, WINDOW_START_FIELD,
        WindowKind, parse_aggregate,
    },
    streamjob::{
        DeliveryGuarantee, Format, JobState, KafkaSecurity, PipelineStep, SecurityProtocol,
        StartingOffsets, StreamJobSpec, TimeFormat, UpgradeMode,
    },
};

/// librdkafka properties that Oxbow sets itself and a user may not override.
pub const MANAGED_KAFKA_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "group.id",
    "transactional.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "isolation.level",
    "enable.idempotence",
];

/// Object-storage URL schemes Oxbow can write checkpoints to.
pub const STORAGE_SCHEMES: &[&str] = &["s3", "s3a", "gs", "az", "azure", "abfs", "abfss", "file"];

/// Most windows one record may fall into (hopping `size / slide`).
pub const MAX_WINDOWS_PER_RECORD: u128 = 100;

/// One problem with a spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationError {
    /// Path of the offending field, as in `spec.pipeline[2].filter`.
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a spec.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// A spec that passed validation, in typed form.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedSpec {
    pub pipeline: Pipeline,
    /// Event-time settings.
    pub event_time: EventTime,
    /// Key expression of the sink.
    pub sink_key: Option<Expression>,
    /// Checkpoint settings, when checkpointing is configured.
    pub checkpoint: Option<CheckpointSettings>,
    pub upgrade: UpgradeTimings,
    /// Period of automatic savepoints.
    pub savepoint_interval: Option<Duration>,
    /// `source.startingTimestamp`, epoch milliseconds.
    pub starting_timestamp_ms: Option<i64>,
}

/// Event-time settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventTime {
    /// Field holding the event time; `None` means the Kafka record timestamp.
    pub field: Option<String>,
    /// Its encoding.
    pub format: TimeFormat,
    /// Grace period for late records.
    pub grace: Duration,
    /// Idle time after which stream time follows processing time.
    pub idle_timeout: Duration,
}

/// Checkpoint settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointSettings {
    /// Object-storage URL.
    pub storage: String,
    /// `spec.checkpoint.interval`.
    pub interval: Duration,
    /// Completed checkpoints kept.
    pub retained: u32,
    /// `spec.checkpoint.timeout`: how long one checkpoint may take.
    pub timeout: Duration,
}

/// Upgrade timings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpgradeTimings {
    /// How long the savepoint before an upgrade may take.
    pub savepoint_timeout: Duration,
    /// Oldest checkpoint usable by the last-state fallback.
    pub max_checkpoint_age: Duration,
    /// Deadline for the new generation to become ready.
    pub verify_timeout: Duration,
}

/// Validates `spec`, returning its typed form or every problem found.
pub fn validate(spec: &StreamJobSpec) -> Result<ValidatedSpec, ValidationErrors> {
    let mut v = Validator::default();
    v.job(spec);
    let event_time = v.event_time(spec);
    let (pipeline, fields) = v.pipeline(spec);
    let sink_key = spec
        .sink
        .key
        .as_deref()
        .and_then(|key| v.expression("spec.sink.key", key, fields.as_ref()));
    let checkpoint = v.checkpoint(spec);
    let upgrade = UpgradeTimings {
        savepoint_timeout: v.positive(
            "spec.upgrade.savepointTimeout",
            &spec.upgrade.savepoint_timeout,
        ),
        max_checkpoint_age: v.positive(
            "spec.upgrade.maxCheckpointAge",
            &spec.upgrade.max_checkpoint_age,
        ),
        verify_timeout: v.positive("spec.upgrade.verifyTimeout", &spec.upgrade.verify_timeout),
    };
    let savepoint_interval = spec
        .savepoint
        .interval
        .as_ref()
        .map(|i| v.positive("spec.savepoint.interval", i));
    let starting_timestamp_ms = v.starting_timestamp(spec);
    if v.errors.is_empty() {
        Ok(ValidatedSpec {
            pipeline,
            event_time,
            sink_key,
            checkpoint,
            upgrade,
            savepoint_interval,
            starting_timestamp_ms,
        })
    } else {
        Err(ValidationErrors(v.errors))
    }
}

#[derive(Default)]
struct Validator {
    errors: Vec<ValidationError>,
}

/// The fields a record is known to have at a point of the pipeline (`None`: unknown, as for
/// JSON sources), with where that knowledge came from.
type KnownFields = Option<(BTreeSet<String>, String)>;

impl Validator {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ValidationError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn duration(&mut self, path: &str, d: &DurationString) -> Duration {
        d.parse().unwrap_or_else(|e| {
            self.error(path, e.to_string());
            Duration::ZERO
        })
    }

    fn positive(&mut self, path: &str, d: &DurationString) -> Duration {
        let parsed = d.parse();
        match parsed {
            Ok(value) if value.is_zero() => {
                self.error(path, format!("must be longer than zero, got {d}"));
                value
            }
            Ok(value) => value,
            Err(e) => {
                self.error(path, e.to_string());
                Duration::ZERO
            }
        }
    }

    fn job(&mut self, spec: &StreamJobSpec) {
        if spec.image.as_deref().is_some_and(|i| i.trim().is_empty()) {
            self.error(
                "spec.image",
                "must not be empty; omit it to use the operator's default worker image",
            );
        }
        if spec.replicas < 0 {
            self.error(
                "spec.replicas",
                format!("must not be negative, got {}", spec.replicas),
            );
        } else if spec.replicas == 0 && spec.state == JobState::Running {
            self.error(
                "spec.replicas",
                "must be at least 1 for a running job; set state: suspended to stop it",
            );
        }
        self.kafka(spec);
        self.topics(spec);
        let needs_storage = spec.sink.delivery_guarantee == DeliveryGuarantee::ExactlyOnce
            || spec.upgrade.mode != UpgradeMode::Stateless;
        if spec.checkpoint.is_none() && needs_storage {
            let why = if spec.sink.delivery_guarantee == DeliveryGuarantee::ExactlyOnce {
                "exactly-once delivery commits output together with checkpointed state"
            } else {
                "upgrade mode savepoint and last-state keep state across upgrades"
            };
            self.error(
                "spec.checkpoint.storage",
                format!(
                    "is required: {why}; set it to an object-storage URL such as s3://bucket/prefix, or use deliveryGuarantee at-least-once with upgrade.mode stateless"
                ),
            );
        }
        if spec.savepoint.history_limit < 1 {
            self.error("spec.savepoint.historyLimit", "must be at least 1");
        }
        if let Some(restore) = &spec.restore_from {
            self.storage_url("spec.restoreFrom.savepointPath", &restore.savepoint_path);
        }
        if spec
            .template
            .service_account_name
            .as_deref()
            .is_some_and(|s| s.trim().is_empty())
        {
            self.error(
                "spec.template.serviceAccountName",
                "must not be empty; omit it to use the default",
            );
        }
    }

    fn kafka(&mut self, spec: &StreamJobSpec) {
        let servers = &spec.kafka.bootstrap_servers;
        if servers.trim().is_empty() {
            self.error(
                "spec.kafka.bootstrapServers",
                "must list at least one broker as host:port",
            );
        }
        for server in servers.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let valid = server.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !valid {
                self.error(
                    "spec.kafka.bootstrapServers",
                    format!("{server:?} is not host:port, as in kafka-0.kafka:9092"),
                );
            }
        }
        for key in spec.kafka.properties.keys() {
            if MANAGED_KAFKA_PROPERTIES.contains(&key.as_str()) {
                self.error(
                    format!("spec.kafka.properties[{key}]"),
                    "is managed by Oxbow and cannot be overridden; remove it",
                );
            }
        }
        if let Some(security) = &spec.kafka.security {
            self.security(security);
        }
    }

    fn security(&mut self, security: &KafkaSecurity) {
        let sasl = matches!(
            security.protocol,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        );
        match (sasl, security.mechanism) {
            (true, None) => self.error(
                "spec.kafka.security.mechanism",
                "is required with a SASL protocol: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
            ),
            (false, Some(_)) => self.error(
                "spec.kafka.security.mechanism",
                "applies only to the SASL_PLAINTEXT and SASL_SSL protocols",
            ),
            _ => {}
        }
        if sasl && security.secret_ref.is_none() {
            self.error(
                "spec.kafka.security.secretRef",
                "is required with a SASL protocol: name a Secret with the keys username and password",
            );
        }
    }

    /// `source.startingTimestamp`: required by `startingOffsets: timestamp` and only with it.
    fn starting_timestamp(&mut self, spec: &StreamJobSpec) -> Option<i64> {
        const PATH: &str = "spec.source.startingTimestamp";
        let source = &spec.source;
        match (&source.starting_offsets, &source.starting_timestamp) {
            (StartingOffsets::Timestamp, None) => {
                self.error(PATH, "is required with startingOffsets: timestamp");
                None
            }
            (StartingOffsets::Timestamp, Some(t)) => {
                match t.parse::<k8s_openapi::jiff::Timestamp>() {
                    Ok(t) => Some(t.as_millisecond()),
                    Err(e) => {
                        self.error(PATH, format!("{t:?} is not an RFC 3339 time: {e}"));
                        None
                    }
                }
            }
            (_, Some(_)) => {
                self.error(PATH, "applies only with startingOffsets: timestamp");
                None
            }
            (_, None) => None,
        }
    }

    fn topics(&mut self, spec: &StreamJobSpec) {
        let topics = &spec.source.topics;
        if topics.is_empty() {
            self.error("spec.source.topics", "must name at least one topic");
        }
        let mut seen = BTreeSet::new();
        for (i, topic) in topics.iter().enumerate() {
            self.topic_name(&format!("spec.source.topics[{i}]"), topic);
            if !seen.insert(topic) {
                self.error(
                    format!("spec.source.topics[{i}]"),
                    format!("{topic:?} is listed twice"),
                );
            }
        }
        self.topic_name("spec.sink.topic", &spec.sink.topic);
        if topics.contains(&spec.sink.topic) {
            self.error(
                "spec.sink.topic",
                format!(
                    "{:?} is also a source topic: the job would consume its own output",
                    spec.sink.topic
                ),
            );
        }
        if let Some(dlq) = &spec.dead_letter {
            self.topic_name("spec.deadLetter.topic", &dlq.topic);
            if dlq.topic == spec.sink.topic || topics.contains(&dlq.topic) {
                self.error(
                    "spec.deadLetter.topic",
                    format!(
                        "{:?} must differ from the sink and source topics",
                        dlq.topic
                    ),
                );
            }
        }
    }

    fn topic_name(&mut self, path: &str, topic: &str) {
        let valid_chars = topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if topic.is_empty() || topic.len() > 249 || !valid_chars || topic == "." || topic == ".." {
            self.error(
                path,
                format!("{topic:?} is not a valid Kafka topic name (1-249 characters of a-z, A-Z, 0-9, '.', '_' and '-')"),
            );
        }
    }

    fn storage_url(&mut self, path: &str, url: &str) {
        match url.split_once("://") {
            Some((scheme, rest)) if STORAGE_SCHEMES.contains(&scheme) && !rest.trim_matches('/').is_empty() => {}
            Some((scheme, _)) if !STORAGE_SCHEMES.contains(&scheme) => self.error(
                path,
                format!("unsupported storage scheme {scheme:?}; use one of s3://, gs://, az:// or file://"),
            ),
            _ => self.error(
                path,
                format!("{url:?} is not an object-storage URL such as s3://bucket/prefix or file:///var/lib/oxbow"),
            ),
        }
    }

    fn checkpoint(&mut self, spec: &StreamJobSpec) -> Option<CheckpointSettings> {
        let checkpoint = spec.checkpoint.as_ref()?;
        self.storage_url("spec.checkpoint.storage", &checkpoint.storage);
        let interval = self.positive("spec.checkpoint.interval", &checkpoint.interval);
        let timeout = self.positive("spec.checkpoint.timeout", &checkpoint.timeout);
        let retained = u32::try_from(checkpoint.retained)
            .ok()
            .filter(|r| *r >= 1)
            .unwrap_or_else(|| {
                self.error("spec.checkpoint.retained", "must be at least 1");
                1
            });
        Some(CheckpointSettings {
            storage: checkpoint.storage.clone(),
            interval,
            retained,
            timeout,
        })
    }

    fn event_time(&mut self, spec: &StreamJobSpec) -> EventTime {
        let Some(et) = &spec.source.event_time else {
            return EventTime {
                field: None,
                format: TimeFormat::EpochMillis,
                grace: Duration::ZERO,
                idle_timeout: Duration::from_secs(30),
            };
        };
        if let Some(field) = &et.field {
            if !is_identifier(field) {
                self.error(
                    "spec.source.eventTime.field",
                    format!("{field:?} is not a field name (letters, digits and '_', not starting with a digit)"),
                );
            }
            if spec.source.format != Format::Json {
                self.error(
                    "spec.source.eventTime.field",
                    "needs source.format json; string and bytes records have no fields, so omit it to use the Kafka record timestamp",
                );
            }
        }
        EventTime {
            field: et.field.clone(),
            format: et.format,
            grace: self.duration("spec.source.eventTime.grace", &et.grace),
            idle_timeout: self.positive("spec.source.eventTime.idleTimeout", &et.idle_timeout),
        }
    }

    fn pipeline(&mut self, spec: &StreamJobSpec) -> (Pipeline, KnownFields) {
        let mut fields: KnownFields = match spec.source.format {
            Format::Json => None,
            Format::String | Format::Bytes => Some((
                BTreeSet::from(["value".to_owned()]),
                format!("source.format {}", format_name(spec.source.format)),
            )),
        };
        let mut steps = Vec::new();
        let mut key: Option<(usize, String)> = None;
        let mut window_at: Option<usize> = None;
        let mut shuffle_after = None;
        if let Some(p) = &spec.source.partitioned_by {
            let _ = self.expression("spec.source.partitionedBy", p, None);
        }
        for (i, step) in spec.pipeline.iter().enumerate() {
            let path = format!("spec.pipeline[{i}]");
            let set = [
                step.filter.is_some(),
                step.map.is_some(),
                step.key_by.is_some(),
                step.window.is_some(),
            ];
            if set.iter().filter(|s| **s).count() != 1 {
                self.error(&path, "sets exactly one of filter, map, keyBy or window");
                continue;
            }
            if step.aggregate.is_some() && step.window.is_none() {
                self.error(format!("{path}.aggregate"), "goes only with a window step");
            }
            if let Some(at) = window_at
                && (step.key_by.is_some() || step.window.is_some())
            {
                self.error(
                    &path,
                    format!("only filter and map may follow the window at spec.pipeline[{at}]; a second keyBy or window is not supported yet"),
                );
                continue;
            }
            if let Some(filter) = &step.filter {
                if let Some(e) = self.expression(&format!("{path}.filter"), filter, fields.as_ref())
                {
                    steps.push(Step::Filter(e));
                }
            } else if let Some(map) = &step.map {
                fields = self.map_step(&path, map, &fields, &mut steps);
            } else if let Some(key_by) = &step.key_by {
                if let Some((at, _)) = &key {
                    self.error(
                        format!("{path}.keyBy"),
                        format!(
                            "the pipeline is already keyed at spec.pipeline[{at}]; use one keyBy"
                        ),
                    );
                    continue;
                }
                if let Some(e) = self.expression(&format!("{path}.keyBy"), key_by, fields.as_ref())
                {
                    let field = e.as_field().unwrap_or("key").to_owned();
                    let partitioned = spec
                        .source
                        .partitioned_by
                        .as_deref()
                        .is_some_and(|p| normalize(p) == normalize(key_by));
                    if !partitioned {
                        shuffle_after = Some(steps.len());
                    }
                    key = Some((i, field.clone()));
                    steps.push(Step::KeyBy {
                        expression: e,
                        field,
                    });
                }
            } else if let Some(window) = &step.window {
                window_at = Some(i);
                let Some((_, key_field)) = key.clone() else {
                    self.error(
                        format!("{path}.window"),
                        "needs a keyBy step before it: windows are computed per key",
                    );
                    continue;
                };
                let kind = self.window_kind(&path, window);
                let aggregates = self.aggregates(&path, step, &fields, &key_field);
                let mut out: BTreeSet<String> = aggregates.iter().map(|a| a.name.clone()).collect();
                out.extend([
                    key_field,
                    WINDOW_START_FIELD.to_owned(),
                    WINDOW_END_FIELD.to_owned(),
                ]);
                fields = Some((out, format!("the window at {path}")));
                if let Some(kind) = kind {
                    steps.push(Step::Window { kind, aggregates });
                }
            }
        }
        (
            Pipeline {
                steps,
                shuffle_after,
            },
            fields,
        )
    }

    fn map_step(
        &mut self,
        path: &str,
        map: &std::collections::BTreeMap<String, String>,
        fields: &KnownFields,
        steps: &mut Vec<Step>,
    ) -> KnownFields {
        if map.is_empty() {
            self.error(format!("{path}.map"), "must set at least one output field");
        }
        let mut out = Vec::new();
        for (name, source) in map {
            let field_path = format!("{path}.map.{name}");
            if !is_identifier(name) {
                self.error(&field_path, format!("{name:?} is not a field name (letters, digits and '_', not starting with a digit)"));
            }
            if let Some(e) = self.expression(&field_path, source, fields.as_ref()) {
                out.push((name.clone(), e));
            }
        }
        steps.push(Step::Map(out));
        Some((map.keys().cloned().collect(), format!("the map at {path}")))
    }

    fn window_kind(
        &mut self,
        path: &str,
        window: &crate::streamjob::WindowSpec,
    ) -> Option<WindowKind> {
        let set = [
            window.tumbling.is_some(),
            window.hopping.is_some(),
            window.session.is_some(),
        ];
        if set.iter().filter(|s| **s).count() != 1 {
            self.error(
                format!("{path}.window"),
                "sets exactly one of tumbling, hopping or session",
            );
            return None;
        }
        if let Some(size) = &window.tumbling {
            let size = self.positive(&format!("{path}.window.tumbling"), size);
            return Some(WindowKind::Tumbling { size });
        }
        if let Some(h) = &window.hopping {
            let size = self.positive(&format!("{path}.window.hopping.size"), &h.size);
            let slide = self.positive(&format!("{path}.window.hopping.slide"), &h.slide);
            if !slide.is_zero() && slide > size {
                self.error(
                    format!("{path}.window.hopping.slide"),
                    format!("{} is longer than the window size {}; use a tumbling window, or a slide of at most the size", h.slide, h.size),
                );
            } else if !slide.is_zero()
                && size.as_millis().div_ceil(slide.as_millis()) > MAX_WINDOWS_PER_RECORD
            {
                self.error(
                    format!("{path}.window.hopping.slide"),
                    format!(
                        "puts each record into {} windows; at most {MAX_WINDOWS_PER_RECORD} are allowed, so use a longer slide",
                        size.as_millis().div_ceil(slide.as_millis())
                    ),
                );
            }
            return Some(WindowKind::Hopping { size, slide });
        }
        let gap = window
            .session
            .as_ref()
            .map(|s| self.positive(&format!("{path}.window.session.gap"), &s.gap))?;
        Some(WindowKind::Session { gap })
    }

    fn aggregates(
        &mut self,
        path: &str,
        step: &PipelineStep,
        fields: &KnownFields,
        key_field: &str,
    ) -> Vec<Aggregate> {
        let Some(aggregate) = &step.aggregate else {
            self.error(format!("{path}.aggregate"), "is required with a window: say what to compute, as in {n: count(), total: sum(amount)}");
            return Vec::new();
        };
        if aggregate.is_empty() {
            self.error(
                format!("{path}.aggregate"),
                "must compute at least one value, as in {n: count()}",
            );
        }
        let mut out = Vec::new();
        for (name, text) in aggregate {
            let agg_path = format!("{path}.aggregate.{name}");
            if !is_identifier(name) {
                self.error(&agg_path, format!("{name:?} is not a field name (letters, digits and '_', not starting with a digit)"));
            }
            if name == key_field || name == WINDOW_START_FIELD || name == WINDOW_END_FIELD {
                self.error(&agg_path, format!("{name:?} collides with a field every window row carries ({key_field}, {WINDOW_START_FIELD}, {WINDOW_END_FIELD}); choose another name"));
            }
            match parse_aggregate(name, text) {
                Ok(a) => {
                    if let Some(arg) = &a.argument {
                        self.check_references(&agg_path, arg, fields.as_ref());
                    }
                    out.push(a);
                }
                Err(message) => self.error(&agg_path, message),
            }
        }
        out
    }

    /// Parses a CEL expression and checks what it references.
    fn expression(
        &mut self,
        path: &str,
        source: &str,
        fields: Option<&(BTreeSet<String>, String)>,
    ) -> Option<Expression> {
        match Expression::parse(source) {
            Ok(e) => self.check_references(path, &e, fields).then_some(e),
            Err(message) => {
                self.error(
                    path,
                    format!("{source:?} is not a valid CEL expression: {message}"),
                );
                None
            }
        }
    }

    fn check_references(
        &mut self,
        path: &str,
        e: &Expression,
        fields: Option<&(BTreeSet<String>, String)>,
    ) -> bool {
        let mut ok = true;
        for function in e.functions() {
            if !FUNCTIONS.contains(&function) {
                ok = false;
                self.error(
                    path,
                    format!(
                        "unknown function {function:?} in {:?}; Oxbow expressions can call {}",
                        e.source(),
                        FUNCTIONS.join(", ")
                    ),
                );
            }
        }
        if let Some((known, origin)) = fields {
            for variable in e.variables() {
                if !known.contains(variable) {
                    ok = false;
                    let list = known
                        .iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ");
                    self.error(
                        path,
                        format!("field {variable:?} does not exist here; after {origin} records have the fields {list}"),
                    );
                }
            }
        }
        ok
    }
}

fn format_name(format: Format) -> &'static str {
    match format {
        Format::Json => "json",
        Format::String => "string",
        Format::Bytes => "bytes",
    }
}

fn is_identifier(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn normalize(expression: &str) -> String {
    expression.chars().filter(|c| !c.is_whitespace()).collect()
}
