//! The shared validation, as a user meets it: a manifest goes in, errors with exact paths and
//! actionable messages come out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use oxbow_crds::{
    StreamJob,
    pipeline::{AggregateFunction, Step, WindowKind},
    validation::validate,
};
use serde_json::{Value, json};
use std::time::Duration;

const BASE: &str = r#"
apiVersion: oxbow.dev/v1alpha1
kind: StreamJob
metadata: {name: fraud}
spec:
  replicas: 2
  kafka: {bootstrapServers: "kafka-0:9092,kafka-1:9092"}
  source:
    topics: [payments]
    eventTime: {field: ts, grace: 5s}
  pipeline:
    - filter: "amount > 100.0"
    - map: {account: "account_id", amount: "double(amount)"}
    - keyBy: "account"
    - window: {tumbling: 1m}
      aggregate: {total: "sum(amount)", n: "count()"}
    - filter: "total > 10000.0"
  sink: {topic: alerts, key: "account"}
  deadLetter: {topic: payments-dlq}
  checkpoint: {storage: "s3://bucket/oxbow", interval: 10s}
"#;

fn base() -> Value {
    serde_norway::from_str(BASE).unwrap()
}

fn errors_of(manifest: Value) -> Vec<(String, String)> {
    let job: StreamJob = serde_json::from_value(manifest).expect("manifest deserializes");
    match validate(&job.spec) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.into_iter().map(|e| (e.path, e.message)).collect(),
    }
}

/// Sets `value` at a `/`-separated JSON pointer below `spec`, creating objects on the way.
fn set(mut manifest: Value, pointer: &str, value: Value) -> Value {
    let mut target = &mut manifest["spec"];
    let parts: Vec<&str> = pointer.split('/').collect();
    for part in &parts[..parts.len() - 1] {
        target = match part.parse::<usize>() {
            Ok(i) => &mut target[i],
            Err(_) => &mut target[*part],
        };
    }
    let last = parts[parts.len() - 1];
    match last.parse::<usize>() {
        Ok(i) => target[i] = value,
        Err(_) => target[last] = value,
    }
    manifest
}

fn remove(mut manifest: Value, key: &str) -> Value {
    manifest["spec"].as_object_mut().unwrap().remove(key);
    manifest
}

#[test]
fn the_base_spec_and_the_shipped_examples_are_valid() {
    assert_eq!(errors_of(base()), Vec::<(String, String)>::new());
    for example in ["fraud-detector.yaml", "clickstream-sessions.yaml"] {
        let path = format!(
            "{}/../manifests/examples/{example}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let job = oxbow_crds::parse_manifest(&text).unwrap();
        if let Err(e) = validate(&job.spec) {
            panic!("{example} is invalid: {e}");
        }
    }
}

#[test]
fn a_valid_spec_becomes_a_typed_pipeline() {
    let job: StreamJob = serde_json::from_value(base()).unwrap();
    let valid = validate(&job.spec).unwrap();
    let steps = &valid.pipeline.steps;
    assert_eq!(steps.len(), 5);
    assert!(matches!(&steps[2], Step::KeyBy { field, .. } if field == "account"));
    let Step::Window { kind, aggregates } = &steps[3] else {
        panic!("step 3 is {:?}", steps[3]);
    };
    assert_eq!(
        *kind,
        WindowKind::Tumbling {
            size: Duration::from_secs(60)
        }
    );
    let functions: Vec<_> = aggregates
        .iter()
        .map(|a| (a.name.as_str(), a.function))
        .collect();
    assert_eq!(
        functions,
        [
            ("n", AggregateFunction::Count),
            ("total", AggregateFunction::Sum)
        ]
    );
    assert_eq!(
        valid.pipeline.shuffle_after,
        Some(2),
        "keyBy differs from the source partitioning"
    );
    assert_eq!(valid.event_time.grace, Duration::from_secs(5));
    assert_eq!(valid.checkpoint.unwrap().interval, Duration::from_secs(10));
}

#[test]
fn a_source_partitioned_by_the_key_needs_no_shuffle() {
    let manifest = set(base(), "pipeline/1", json!({"filter": "true"}));
    let manifest = set(manifest, "pipeline/2", json!({"keyBy": "account_id"}));
    let manifest = set(
        manifest,
        "pipeline/3/aggregate",
        json!({"total": "sum(double(amount))"}),
    );
    let manifest = set(manifest, "source/partitionedBy", json!("account_id"));
    let manifest = set(manifest, "sink/key", json!("account_id"));
    let job: StreamJob = serde_json::from_value(manifest).unwrap();
    let valid = validate(&job.spec).unwrap();
    assert!(!valid.pipeline.needs_shuffle());
}

/// One invalid spec: how it is made, and the path and words its error must contain.
struct Case {
    name: &'static str,
    manifest: Value,
    path: &'static str,
    says: &'static str,
}

fn cases() -> Vec<Case> {
    let case = |name, manifest, path, says| Case {
        name,
        manifest,
        path,
        says,
    };
    vec![
        case(
            "filter does not parse",
            set(base(), "pipeline/0/filter", json!("amount >")),
            "spec.pipeline[0].filter",
            "not a valid CEL expression",
        ),
        case(
            "map expression does not parse",
            set(base(), "pipeline/1/map/amount", json!("double(amount")),
            "spec.pipeline[1].map.amount",
            "not a valid CEL expression",
        ),
        case(
            "unknown function",
            set(base(), "pipeline/0/filter", json!("lenght(account_id) > 3")),
            "spec.pipeline[0].filter",
            "unknown function \"lenght\"",
        ),
        case(
            "field removed by the map",
            set(base(), "pipeline/4/filter", json!("account_id != ''")),
            "spec.pipeline[4].filter",
            "field \"account_id\" does not exist here",
        ),
        case(
            "field typo after the window",
            set(base(), "pipeline/4/filter", json!("totl > 1.0")),
            "spec.pipeline[4].filter",
            "window_end, window_start",
        ),
        case(
            "step with two kinds",
            set(base(), "pipeline/0/keyBy", json!("account")),
            "spec.pipeline[0]",
            "exactly one of filter, map, keyBy or window",
        ),
        case(
            "empty step",
            set(base(), "pipeline/0", json!({})),
            "spec.pipeline[0]",
            "exactly one of",
        ),
        case(
            "window without keyBy",
            set(base(), "pipeline/2", json!({"filter": "true"})),
            "spec.pipeline[3].window",
            "needs a keyBy step before it",
        ),
        case(
            "window without aggregate",
            set(base(), "pipeline/3/aggregate", Value::Null),
            "spec.pipeline[3].aggregate",
            "is required with a window",
        ),
        case(
            "aggregate on a filter",
            set(base(), "pipeline/0/aggregate", json!({"n": "count()"})),
            "spec.pipeline[0].aggregate",
            "goes only with a window",
        ),
        case(
            "unknown aggregation",
            set(
                base(),
                "pipeline/3/aggregate/total",
                json!("median(amount)"),
            ),
            "spec.pipeline[3].aggregate.total",
            "unknown aggregation \"median\"",
        ),
        case(
            "aggregation missing its argument",
            set(base(), "pipeline/3/aggregate/total", json!("sum()")),
            "spec.pipeline[3].aggregate.total",
            "needs an argument",
        ),
        case(
            "aggregate named like the key",
            set(base(), "pipeline/3/aggregate/account", json!("count()")),
            "spec.pipeline[3].aggregate.account",
            "collides",
        ),
        case(
            "two window kinds",
            set(base(), "pipeline/3/window/session", json!({"gap": "5m"})),
            "spec.pipeline[3].window",
            "exactly one of tumbling, hopping or session",
        ),
        case(
            "malformed window size",
            set(base(), "pipeline/3/window/tumbling", json!("1 minute")),
            "spec.pipeline[3].window.tumbling",
            "is not a duration",
        ),
        case(
            "zero window size",
            set(base(), "pipeline/3/window/tumbling", json!("0s")),
            "spec.pipeline[3].window.tumbling",
            "longer than zero",
        ),
        case(
            "hopping slide longer than size",
            set(
                base(),
                "pipeline/3/window",
                json!({"hopping": {"size": "1m", "slide": "5m"}}),
            ),
            "spec.pipeline[3].window.hopping.slide",
            "longer than the window size",
        ),
        case(
            "hopping with too many windows",
            set(
                base(),
                "pipeline/3/window",
                json!({"hopping": {"size": "1h", "slide": "1s"}}),
            ),
            "spec.pipeline[3].window.hopping.slide",
            "3600 windows",
        ),
        case(
            "second keyBy after the window",
            set(base(), "pipeline/4", json!({"keyBy": "total"})),
            "spec.pipeline[4]",
            "only filter and map may follow the window",
        ),
        case(
            "map to an invalid field name",
            set(base(), "pipeline/1/map/2bad", json!("account_id")),
            "spec.pipeline[1].map.2bad",
            "not a field name",
        ),
        case(
            "sink key reads a missing field",
            set(base(), "sink/key", json!("account_id")),
            "spec.sink.key",
            "does not exist here",
        ),
        case(
            "exactly-once without storage",
            remove(base(), "checkpoint"),
            "spec.checkpoint.storage",
            "exactly-once",
        ),
        case(
            "unsupported storage scheme",
            set(base(), "checkpoint/storage", json!("ftp://host/dir")),
            "spec.checkpoint.storage",
            "unsupported storage scheme \"ftp\"",
        ),
        case(
            "malformed checkpoint interval",
            set(base(), "checkpoint/interval", json!("10")),
            "spec.checkpoint.interval",
            "is not a duration",
        ),
        case(
            "sink consumes its own output",
            set(base(), "sink/topic", json!("payments")),
            "spec.sink.topic",
            "consume its own output",
        ),
        case(
            "dead letters into the sink",
            set(base(), "deadLetter/topic", json!("alerts")),
            "spec.deadLetter.topic",
            "must differ",
        ),
        case(
            "invalid topic name",
            set(base(), "source/topics/0", json!("pay ments")),
            "spec.source.topics[0]",
            "not a valid Kafka topic name",
        ),
        case(
            "duplicate topic",
            set(base(), "source/topics", json!(["payments", "payments"])),
            "spec.source.topics[1]",
            "listed twice",
        ),
        case(
            "no source topics",
            set(base(), "source/topics", json!([])),
            "spec.source.topics",
            "at least one topic",
        ),
        case(
            "broker without port",
            set(base(), "kafka/bootstrapServers", json!("kafka-0")),
            "spec.kafka.bootstrapServers",
            "not host:port",
        ),
        case(
            "managed Kafka property",
            set(base(), "kafka/properties", json!({"group.id": "mine"})),
            "spec.kafka.properties[group.id]",
            "managed by Oxbow",
        ),
        case(
            "SASL without mechanism",
            set(
                base(),
                "kafka/security",
                json!({"protocol": "SASL_SSL", "secretRef": {"name": "creds"}}),
            ),
            "spec.kafka.security.mechanism",
            "is required with a SASL protocol",
        ),
        case(
            "SASL without secret",
            set(
                base(),
                "kafka/security",
                json!({"protocol": "SASL_SSL", "mechanism": "SCRAM-SHA-512"}),
            ),
            "spec.kafka.security.secretRef",
            "username and password",
        ),
        case(
            "zero replicas while running",
            set(base(), "replicas", json!(0)),
            "spec.replicas",
            "set state: suspended",
        ),
        case(
            "event-time field on string records",
            set(base(), "source/format", json!("string")),
            "spec.source.eventTime.field",
            "needs source.format json",
        ),
        case(
            "malformed grace",
            set(base(), "source/eventTime/grace", json!("5 s")),
            "spec.source.eventTime.grace",
            "is not a duration",
        ),
        case(
            "zero savepoint timeout",
            set(base(), "upgrade", json!({"savepointTimeout": "0s"})),
            "spec.upgrade.savepointTimeout",
            "longer than zero",
        ),
        case(
            "restore from a non-URL",
            set(
                base(),
                "restoreFrom",
                json!({"savepointPath": "my-savepoint"}),
            ),
            "spec.restoreFrom.savepointPath",
            "not an object-storage URL",
        ),
    ]
}

#[test]
fn invalid_specs_are_reported_at_their_path_with_actionable_words() {
    let cases = cases();
    assert!(cases.len() >= 20);
    let mut failures = Vec::new();
    for case in cases {
        let errors = errors_of(case.manifest);
        let hit = errors
            .iter()
            .any(|(path, message)| path == case.path && message.contains(case.says));
        if !hit {
            failures.push(format!(
                "{}: expected {} to say {:?}, got {errors:#?}",
                case.name, case.path, case.says
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_problem_is_reported_at_once() {
    let manifest = set(base(), "pipeline/0/filter", json!("amount >"));
    let manifest = set(manifest, "checkpoint/interval", json!("soon"));
    let manifest = set(manifest, "sink/topic", json!("payments"));
    let paths: Vec<String> = errors_of(manifest).into_iter().map(|(p, _)| p).collect();
    for expected in [
        "spec.pipeline[0].filter",
        "spec.checkpoint.interval",
        "spec.sink.topic",
    ] {
        assert!(
            paths.iter().any(|p| p == expected),
            "{expected} missing from {paths:?}"
        );
    }
}

#[test]
fn a_start_from_a_timestamp_needs_an_rfc_3339_time_and_only_then() {
    let with = |source: &str| {
        let yaml = format!(
            "apiVersion: oxbow.dev/v1alpha1\nkind: StreamJob\nmetadata: {{name: t}}\nspec:\n  kafka: {{bootstrapServers: \"k:9092\"}}\n  source: {{topics: [in]{source}}}\n  pipeline: [{{filter: \"true\"}}]\n  sink: {{topic: out}}\n  checkpoint: {{storage: \"file:///c\"}}\n"
        );
        let job = oxbow_crds::parse_manifest(&yaml).unwrap();
        oxbow_crds::validation::validate(&job.spec).map_err(|e| e.to_string())
    };
    let valid =
        with(", startingOffsets: timestamp, startingTimestamp: \"2026-12-01T00:00:00Z\"").unwrap();
    assert_eq!(valid.starting_timestamp_ms, Some(1_796_083_200_000));
    let missing = with(", startingOffsets: timestamp").unwrap_err();
    assert!(
        missing
            .contains("spec.source.startingTimestamp: is required with startingOffsets: timestamp"),
        "{missing}"
    );
    let bad = with(", startingOffsets: timestamp, startingTimestamp: yesterday").unwrap_err();
    assert!(
        bad.contains("\"yesterday\" is not an RFC 3339 time"),
        "{bad}"
    );
    let stray = with(", startingTimestamp: \"2026-12-01T00:00:00Z\"").unwrap_err();
    assert!(
        stray.contains("applies only with startingOffsets: timestamp"),
        "{stray}"
    );
}
