//! The CRD's `x-kubernetes-validations` rules, evaluated client-side with kube's CEL support,
//! as a modern API server evaluates them at admission (1.20, the test control plane, does not).

use super::StreamJob;
use serde_json::{Value, json};

const VALID: &str = r#"
apiVersion: oxbow.dev/v1alpha1
kind: StreamJob
metadata: {name: fraud, namespace: default}
spec:
  kafka: {bootstrapServers: "kafka:9092"}
  source: {topics: [payments]}
  pipeline:
    - keyBy: account
    - window: {tumbling: 1m}
      aggregate: {n: "count()"}
  sink: {topic: alerts}
  checkpoint: {storage: "s3://bucket/oxbow"}
"#;

fn job(patch: impl FnOnce(&mut Value)) -> StreamJob {
    let mut value: Value = serde_norway::from_str(VALID).unwrap();
    patch(&mut value["spec"]);
    serde_json::from_value(value).unwrap()
}

fn rejection(patch: impl FnOnce(&mut Value)) -> String {
    match job(patch).validate_cel() {
        Ok(()) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_valid_job_passes_every_rule() {
    job(|_| {}).validate_cel().unwrap();
    job(|s| {
        s["sink"]["deliveryGuarantee"] = json!("at-least-once");
        s["upgrade"] = json!({"mode": "stateless"});
        s.as_object_mut().unwrap().remove("checkpoint");
    })
    .validate_cel()
    .unwrap();
    job(|s| {
        s["state"] = json!("suspended");
        s["replicas"] = json!(0);
    })
    .validate_cel()
    .unwrap();
}

#[test]
fn exactly_once_needs_checkpoint_storage() {
    let message = rejection(|s| {
        s["upgrade"] = json!({"mode": "stateless"});
        s.as_object_mut().unwrap().remove("checkpoint");
    });
    assert!(
        message.contains("exactly-once needs checkpoint.storage"),
        "{message}"
    );
}

#[test]
fn savepoint_upgrades_need_checkpoint_storage() {
    let message = rejection(|s| {
        s["sink"]["deliveryGuarantee"] = json!("at-least-once");
        s.as_object_mut().unwrap().remove("checkpoint");
    });
    assert!(
        message.contains("upgrade.mode savepoint and last-state need checkpoint.storage"),
        "{message}"
    );
}

#[test]
fn running_jobs_need_a_replica() {
    let message = rejection(|s| s["replicas"] = json!(0));
    assert!(
        message.contains("replicas must be at least 1 unless state is suspended"),
        "{message}"
    );
}

#[test]
fn a_step_sets_exactly_one_kind() {
    let message = rejection(|s| s["pipeline"][0]["filter"] = json!("true"));
    assert!(
        message.contains("exactly one of filter, map, keyBy or window"),
        "{message}"
    );
    let message = rejection(|s| s["pipeline"][0] = json!({}));
    assert!(
        message.contains("exactly one of filter, map, keyBy or window"),
        "{message}"
    );
}

#[test]
fn aggregate_goes_with_window() {
    let message = rejection(|s| {
        s["pipeline"][1]
            .as_object_mut()
            .unwrap()
            .remove("aggregate")
            .map(|_| ())
            .unwrap()
    });
    assert!(message.contains("aggregate goes with window"), "{message}");
    let message = rejection(|s| s["pipeline"][0]["aggregate"] = json!({"n": "count()"}));
    assert!(message.contains("aggregate goes with window"), "{message}");
}

#[test]
fn a_window_has_one_shape() {
    let message = rejection(|s| s["pipeline"][1]["window"]["session"] = json!({"gap": "5m"}));
    assert!(
        message.contains("exactly one of tumbling, hopping or session"),
        "{message}"
    );
}

#[test]
fn sink_and_dead_letter_topics_are_apart_from_the_source() {
    let message = rejection(|s| s["sink"]["topic"] = json!("payments"));
    assert!(message.contains("consume its own output"), "{message}");
    let message = rejection(|s| s["deadLetter"] = json!({"topic": "alerts"}));
    assert!(
        message.contains("deadLetter.topic must differ from sink.topic"),
        "{message}"
    );
}

#[test]
fn sasl_needs_a_secret() {
    let message = rejection(|s| {
        s["kafka"]["security"] = json!({"protocol": "SASL_SSL", "mechanism": "SCRAM-SHA-512"})
    });
    assert!(message.contains("needs secretRef"), "{message}");
}
