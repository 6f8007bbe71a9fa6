use kube::CustomResourceExt;
use oxbow_crds::{StreamJob, streamjob::RestoreFromSpec};
use serde_json::Value;

use super::*;

/// A spec that sets every field, so that every field can be changed.
const FULL_SPEC: &str = r#"
image: registry.example/oxbow-worker:0.1.0
replicas: 3
state: running
kafka:
  bootstrapServers: kafka:9092
  security: {protocol: SASL_SSL, mechanism: SCRAM-SHA-512, secretRef: {name: kafka-creds}}
  properties: {linger.ms: "5"}
source:
  topics: [payments, refunds]
  format: json
  startingOffsets: earliest
  eventTime: {field: ts, format: epochMillis, grace: 5s, idleTimeout: 30s}
  partitionedBy: account
pipeline:
  - filter: "amount > 100.0"
  - map: {account: "account_id", amount: "double(amount)"}
  - keyBy: account
  - window: {tumbling: 1m}
    aggregate: {total: "sum(amount)"}
  - window: {hopping: {size: 1m, slide: 10s}}
    aggregate: {n: "count()"}
  - window: {session: {gap: 5m}}
    aggregate: {n: "count()"}
sink: {topic: alerts, format: json, key: account, deliveryGuarantee: exactly-once}
deadLetter: {topic: payments-dlq}
checkpoint: {storage: "s3://bucket/oxbow", interval: 10s, retained: 3, timeout: 60s}
upgrade:
  mode: savepoint
  savepointTimeout: 120s
  onSavepointFailure: block
  maxCheckpointAge: 5m
  verifyTimeout: 5m
  discardIncompatibleState: false
savepoint: {triggerNonce: 1, interval: 6h, historyLimit: 10, onDelete: true}
restoreFrom: {savepointPath: "s3://bucket/oxbow/payments/fraud/savepoints/sp-1"}
template:
  resources: {requests: {cpu: 500m}, limits: {memory: 512Mi}}
  env: [{name: RUST_BACKTRACE, value: "1"}]
  nodeSelector: {pool: streaming}
  tolerations: [{key: dedicated, operator: Equal, value: streaming, effect: NoSchedule}]
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms: [{matchExpressions: [{key: pool, operator: In, values: [streaming]}]}]
  serviceAccountName: fraud-worker
  annotations: {prometheus.io/scrape: "true"}
  labels: {team: risk}
"#;

/// How a change under each spec path (JSON pointer, relative to `spec`) takes effect on a
/// running job. A field missing here fails `every_spec_field_in_the_crd_is_classified`.
const EXPECTED: &[(&str, ChangeKind)] = &[
    ("/image", ChangeKind::RestartRequired),
    ("/replicas", ChangeKind::Rescale),
    ("/state", ChangeKind::Suspend),
    ("/kafka", ChangeKind::RestartRequired),
    ("/source", ChangeKind::RestartRequired),
    ("/pipeline", ChangeKind::RestartRequired),
    ("/sink", ChangeKind::RestartRequired),
    ("/deadLetter", ChangeKind::RestartRequired),
    ("/checkpoint/storage", ChangeKind::RestartRequired),
    ("/checkpoint/interval", ChangeKind::RestartRequired),
    ("/checkpoint/timeout", ChangeKind::RestartRequired),
    ("/checkpoint/retained", ChangeKind::Ignorable),
    ("/upgrade/mode", ChangeKind::Ignorable),
    ("/upgrade/savepointTimeout", ChangeKind::Ignorable),
    ("/upgrade/onSavepointFailure", ChangeKind::Ignorable),
    ("/upgrade/maxCheckpointAge", ChangeKind::Ignorable),
    ("/upgrade/verifyTimeout", ChangeKind::Ignorable),
    ("/upgrade/discardIncompatibleState", ChangeKind::Ignorable),
    ("/savepoint/triggerNonce", ChangeKind::SavepointTrigger),
    ("/savepoint/interval", ChangeKind::Ignorable),
    ("/savepoint/historyLimit", ChangeKind::Ignorable),
    ("/savepoint/onDelete", ChangeKind::Ignorable),
    ("/restoreFrom/savepointPath", ChangeKind::RestartRequired),
    ("/template/resources", ChangeKind::RestartRequired),
    ("/template/env", ChangeKind::RestartRequired),
    ("/template/nodeSelector", ChangeKind::RestartRequired),
    ("/template/tolerations", ChangeKind::RestartRequired),
    ("/template/affinity", ChangeKind::RestartRequired),
    ("/template/serviceAccountName", ChangeKind::RestartRequired),
    ("/template/annotations", ChangeKind::Ignorable),
    ("/template/labels", ChangeKind::Ignorable),
];

fn expected(path: &str) -> Option<(&'static str, ChangeKind)> {
    EXPECTED
        .iter()
        .find(|(prefix, _)| path == *prefix || path.starts_with(&format!("{prefix}/")))
        .copied()
}

fn full() -> StreamJobSpec {
    parse_spec(FULL_SPEC)
}

/// Parses a spec from YAML through the manifest parser of crds.
fn parse_spec(spec_yaml: &str) -> StreamJobSpec {
    let indented: String = spec_yaml.lines().map(|l| format!("  {l}\n")).collect();
    let manifest = format!(
        "apiVersion: oxbow.dev/v1alpha1\nkind: StreamJob\nmetadata: {{name: fraud}}\nspec:\n{indented}"
    );
    oxbow_crds::parse_manifest(&manifest)
        .expect("the fixture spec parses")
        .spec
}

fn changed(edit: impl FnOnce(&mut StreamJobSpec)) -> Change {
    let old = full();
    let mut new = old.clone();
    edit(&mut new);
    classify(&old, &new)
}

// ---- Every field is classified --------------------------------------------------------------

/// Every property path under `spec` in the CRD's schema (arrays and maps add no segment).
fn schema_paths(schema: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            let child = format!("{path}/{name}");
            out.push(child.clone());
            schema_paths(sub, &child, out);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(sub) = schema.get(key).filter(|s| s.is_object()) {
            schema_paths(sub, path, out);
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        for sub in schema
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            schema_paths(sub, path, out);
        }
    }
}

#[test]
fn every_spec_field_in_the_crd_is_classified() {
    let crd = serde_json::to_value(StreamJob::crd()).unwrap();
    let spec_schema =
        &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let mut paths = Vec::new();
    schema_paths(spec_schema, "", &mut paths);
    assert!(paths.len() > 40, "the schema walk found only {paths:?}");
    let unknown: Vec<_> = paths
        .iter()
        .filter(|p| expected(p).is_none())
        // Parents of classified fields (`/checkpoint` of `/checkpoint/storage`) are fine.
        .filter(|p| {
            !EXPECTED
                .iter()
                .any(|(e, _)| e.starts_with(&format!("{p}/")))
        })
        .collect();
    assert!(
        unknown.is_empty(),
        "spec fields nobody classified: {unknown:?}; classify them in diff.rs and add them to EXPECTED"
    );
}

/// Every leaf (string, number, bool) of a JSON value, as an escaped JSON pointer.
fn leaves(value: &Value, path: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = k.replace('~', "~0").replace('/', "~1");
                leaves(v, format!("{path}/{key}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                leaves(v, format!("{path}/{i}"), out);
            }
        }
        Value::Null => {}
        _ => out.push(path),
    }
}

/// Every enum value of the spec: where appending to a string does not deserialize, one of
/// these does.
const ENUM_VALUES: &[&str] = &[
    "running",
    "suspended",
    "json",
    "string",
    "bytes",
    "earliest",
    "latest",
    "epochMillis",
    "epochSeconds",
    "rfc3339",
    "exactly-once",
    "at-least-once",
    "savepoint",
    "last-state",
    "stateless",
    "block",
    "PLAINTEXT",
    "SSL",
    "SASL_PLAINTEXT",
    "SASL_SSL",
    "PLAIN",
    "SCRAM-SHA-256",
    "SCRAM-SHA-512",
];

/// `spec` with the leaf at `pointer` changed to another valid value.
fn mutate(spec: &Value, pointer: &str) -> StreamJobSpec {
    let leaf = spec.pointer(pointer).cloned().unwrap();
    let candidates: Vec<Value> = match &leaf {
        Value::Bool(b) => vec![Value::Bool(!b)],
        Value::Number(n) => vec![match n.as_i64() {
            Some(i) => Value::from(i + 1),
            None => Value::from(n.as_f64().unwrap_or(0.0) + 1.0),
        }],
        Value::String(s) => std::iter::once(format!("{s}1"))
            .chain(ENUM_VALUES.iter().map(|v| (*v).to_owned()))
            .filter(|v| v != s)
            .map(Value::String)
            .collect(),
        other => panic!("{pointer} is not a leaf: {other}"),
    };
    for candidate in candidates {
        let mut value = spec.clone();
        *value.pointer_mut(pointer).unwrap() = candidate;
        if let Ok(new) = serde_json::from_value::<StreamJobSpec>(value) {
            return new;
        }
    }
    panic!("found no other valid value for {pointer}")
}

#[test]
fn changing_any_field_takes_the_effect_the_table_says() {
    let old = full();
    let json = serde_json::to_value(&old).unwrap();
    let mut paths = Vec::new();
    leaves(&json, String::new(), &mut paths);
    let mut exercised = std::collections::BTreeSet::new();
    for path in &paths {
        let Some((prefix, kind)) = expected(path) else {
            panic!("{path} is not in EXPECTED: classify it");
        };
        exercised.insert(prefix);
        let new = mutate(&json, path);
        assert_ne!(old, new, "{path}");
        let change = classify(&old, &new);
        assert_eq!(change.kind(), kind, "{path}: {change:?}");
        // And back, which for the run state is the opposite operation.
        let back = match kind {
            ChangeKind::Suspend => ChangeKind::Resume,
            other => other,
        };
        assert_eq!(classify(&new, &old).kind(), back, "{path} reverted");
    }
    let missed: Vec<_> = EXPECTED
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !exercised.contains(p))
        .collect();
    assert!(
        missed.is_empty(),
        "FULL_SPEC sets no field under {missed:?}"
    );
}

// ---- Field groups ---------------------------------------------------------------------------

#[test]
fn equal_specs_are_unchanged_even_when_defaults_are_spelled_out() {
    assert_eq!(classify(&full(), &full()).kind(), ChangeKind::Unchanged);
    assert!(classify(&full(), &full()).is_unchanged());
    let terse = parse_spec(
        "kafka: {bootstrapServers: kafka:9092}\nsource: {topics: [a]}\nsink: {topic: b}\n",
    );
    let spelled = parse_spec(
        "replicas: 1\nstate: running\nkafka: {bootstrapServers: kafka:9092}\nsource: {topics: [a], format: json, startingOffsets: earliest}\nsink: {topic: b, deliveryGuarantee: exactly-once}\nupgrade: {mode: savepoint, savepointTimeout: 120s}\nsavepoint: {triggerNonce: 0, historyLimit: 10}\n",
    );
    assert_eq!(classify(&terse, &spelled).kind(), ChangeKind::Unchanged);
}

#[test]
fn what_the_worker_runs_needs_a_restart() {
    type Edit = Box<dyn FnOnce(&mut StreamJobSpec)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "spec.image",
            Box::new(|s| s.image = Some("registry.example/oxbow-worker:0.2.0".into())),
        ),
        ("spec.image", Box::new(|s| s.image = None)),
        (
            "spec.pipeline",
            Box::new(|s| {
                s.pipeline.pop();
            }),
        ),
        (
            "spec.kafka.bootstrapServers",
            Box::new(|s| s.kafka.bootstrap_servers = "other:9092".into()),
        ),
        ("spec.kafka.security", Box::new(|s| s.kafka.security = None)),
        (
            "spec.kafka.properties",
            Box::new(|s| {
                s.kafka.properties.insert("acks".into(), "all".into());
            }),
        ),
        (
            "spec.source.topics",
            Box::new(|s| s.source.topics.push("chargebacks".into())),
        ),
        (
            "spec.source.eventTime",
            Box::new(|s| s.source.event_time = None),
        ),
        (
            "spec.sink.topic",
            Box::new(|s| s.sink.topic = "alerts-v2".into()),
        ),
        ("spec.deadLetter", Box::new(|s| s.dead_letter = None)),
        ("spec.checkpoint", Box::new(|s| s.checkpoint = None)),
        (
            "spec.checkpoint.storage",
            Box::new(|s| {
                if let Some(c) = &mut s.checkpoint {
                    c.storage = "gs://other".into()
                }
            }),
        ),
        (
            "spec.checkpoint.interval",
            Box::new(|s| {
                if let Some(c) = &mut s.checkpoint {
                    c.interval = "30s".into()
                }
            }),
        ),
        (
            "spec.template.resources",
            Box::new(|s| s.template.resources = None),
        ),
        ("spec.template.env", Box::new(|s| s.template.env.clear())),
        (
            "spec.template.tolerations",
            Box::new(|s| s.template.tolerations.clear()),
        ),
        (
            "spec.template.serviceAccountName",
            Box::new(|s| s.template.service_account_name = None),
        ),
    ];
    for (field, edit) in cases {
        let change = changed(edit);
        assert_eq!(change.kind(), ChangeKind::RestartRequired, "{field}");
        assert!(change.requires_restart(), "{field}");
        assert_eq!(change.fields_with(Effect::RestartRequired), [field]);
        assert!(!change.restore_requested(), "{field}");
    }
    // Adding checkpoints where there were none is a restart too.
    let old = StreamJobSpec {
        checkpoint: None,
        ..full()
    };
    let change = classify(&old, &full());
    assert_eq!(
        change.fields().collect::<Vec<_>>(),
        [("spec.checkpoint", Effect::RestartRequired)]
    );
}

#[test]
fn what_only_the_operator_reads_is_ignorable() {
    let change = changed(|s| {
        s.upgrade.mode = oxbow_crds::streamjob::UpgradeMode::LastState;
        s.upgrade.verify_timeout = "10m".into();
        s.savepoint.history_limit = 3;
        s.savepoint.interval = None;
        s.savepoint.on_delete = false;
        if let Some(c) = &mut s.checkpoint {
            c.retained = 5;
        }
        s.template.labels.insert("cost-center".into(), "42".into());
        s.template.annotations.clear();
    });
    assert_eq!(change.kind(), ChangeKind::Ignorable);
    assert!(!change.requires_restart() && !change.rescales() && !change.triggers_savepoint());
    assert_eq!(
        change.fields_with(Effect::Ignorable),
        [
            "spec.checkpoint.retained",
            "spec.savepoint.historyLimit",
            "spec.savepoint.interval",
            "spec.savepoint.onDelete",
            "spec.template.annotations",
            "spec.template.labels",
            "spec.upgrade.mode",
            "spec.upgrade.verifyTimeout",
        ]
    );
}

#[test]
fn a_new_nonce_takes_a_savepoint_whichever_way_it_moves() {
    for nonce in [2, 0, -7] {
        let change = changed(|s| s.savepoint.trigger_nonce = nonce);
        assert_eq!(change.kind(), ChangeKind::SavepointTrigger, "{nonce}");
        assert!(change.triggers_savepoint());
    }
    // With an ignorable change alongside, the savepoint still wins.
    let change = changed(|s| {
        s.savepoint.trigger_nonce += 1;
        s.savepoint.history_limit += 1;
    });
    assert_eq!(change.kind(), ChangeKind::SavepointTrigger);
}

#[test]
fn replicas_rescale_and_a_restart_carries_them_along() {
    let change = changed(|s| s.replicas = 5);
    assert_eq!(change.kind(), ChangeKind::Rescale);
    assert!(change.rescales() && !change.requires_restart());

    let change = changed(|s| {
        s.replicas = 5;
        s.image = Some("registry.example/oxbow-worker:0.2.0".into());
        s.savepoint.trigger_nonce += 1;
    });
    assert_eq!(change.kind(), ChangeKind::RestartRequired);
    assert!(change.rescales() && change.requires_restart() && change.triggers_savepoint());
    assert_eq!(
        change.fields().collect::<Vec<_>>(),
        [
            ("spec.image", Effect::RestartRequired),
            ("spec.replicas", Effect::Rescale),
            ("spec.savepoint.triggerNonce", Effect::SavepointTrigger),
        ]
    );
}

#[test]
fn suspend_and_resume_come_first() {
    let change = changed(|s| {
        s.state = JobState::Suspended;
        s.image = Some("registry.example/oxbow-worker:0.2.0".into());
    });
    assert_eq!(change.kind(), ChangeKind::Suspend);
    assert_eq!(change.run_state(), Some(RunStateChange::Suspend));
    assert!(
        change.requires_restart(),
        "the new image waits for the resume"
    );

    let suspended = StreamJobSpec {
        state: JobState::Suspended,
        ..full()
    };
    let running = StreamJobSpec {
        replicas: 6,
        ..full()
    };
    let change = classify(&suspended, &running);
    assert_eq!(change.kind(), ChangeKind::Resume);
    assert_eq!(change.run_state(), Some(RunStateChange::Resume));
    assert!(change.rescales());
}

#[test]
fn while_suspended_every_change_waits_for_the_resume() {
    let suspended = StreamJobSpec {
        state: JobState::Suspended,
        ..full()
    };
    for edit in [
        (|s: &mut StreamJobSpec| s.image = Some("registry.example/oxbow-worker:0.2.0".into()))
            as fn(&mut StreamJobSpec),
        |s| s.replicas = 9,
        |s| s.savepoint.trigger_nonce += 1,
        |s| s.pipeline.clear(),
    ] {
        let mut new = suspended.clone();
        edit(&mut new);
        let change = classify(&suspended, &new);
        assert_eq!(change.kind(), ChangeKind::Ignorable, "{change:?}");
        assert_eq!(change.run_state(), None);
    }
}

#[test]
fn restore_from_restarts_from_the_named_savepoint_only_when_set_or_moved() {
    let elsewhere = RestoreFromSpec {
        savepoint_path: "s3://bucket/oxbow/payments/fraud/savepoints/sp-2".into(),
    };
    let change = changed(|s| s.restore_from = Some(elsewhere.clone()));
    assert_eq!(change.kind(), ChangeKind::RestartRequired);
    assert!(change.restore_requested());

    let old = StreamJobSpec {
        restore_from: None,
        ..full()
    };
    let change = classify(&old, &full());
    assert_eq!(change.kind(), ChangeKind::RestartRequired);
    assert!(change.restore_requested());

    let change = changed(|s| s.restore_from = None);
    assert_eq!(change.kind(), ChangeKind::Ignorable);
    assert!(!change.restore_requested());
}

#[test]
fn precedence_follows_disruption() {
    use ChangeKind::*;
    let order = [
        Unchanged,
        Ignorable,
        SavepointTrigger,
        Rescale,
        RestartRequired,
        Resume,
        Suspend,
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]));
    let names: Vec<_> = order.iter().map(|k| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "Unchanged",
            "Ignorable",
            "SavepointTrigger",
            "Rescale",
            "RestartRequired",
            "Resume",
            "Suspend"
        ]
    );
    assert_eq!(Effect::RestartRequired.as_str(), "RestartRequired");
}
