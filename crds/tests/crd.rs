//! The generated CRD: locked by the committed YAML (the golden file), and shaped as users and
//! tools expect.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use oxbow_crds::{CRD_FILE, StreamJob, crd_yaml};

#[test]
fn the_committed_crd_matches_the_types() {
    let path = format!("{}/{CRD_FILE}", env!("CARGO_MANIFEST_DIR"));
    let committed = std::fs::read_to_string(&path).unwrap();
    assert!(
        committed == crd_yaml().unwrap(),
        "{CRD_FILE} drifted from the StreamJob types: run `cargo run -p oxbow-crds --bin crdgen -- --write` and review the diff"
    );
}

#[test]
fn the_crd_is_small_and_complete() {
    let yaml = crd_yaml().unwrap();
    assert!(
        yaml.len() < 64 * 1024,
        "the CRD is {} bytes; keep it under 64 KiB",
        yaml.len()
    );

    let crd: CustomResourceDefinition = serde_norway::from_str(&yaml).unwrap();
    assert_eq!(crd.metadata.name.as_deref(), Some("streamjobs.oxbow.dev"));
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.short_names, Some(vec!["sj".to_owned()]));
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    let subresources = version.subresources.as_ref().unwrap();
    assert!(subresources.status.is_some());
    let scale = subresources.scale.as_ref().unwrap();
    assert_eq!(scale.spec_replicas_path, ".spec.replicas");
    assert_eq!(scale.status_replicas_path, ".status.replicas");
    assert_eq!(
        scale.label_selector_path.as_deref(),
        Some(".status.selector")
    );
    let columns: Vec<&str> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "Phase",
            "Replicas",
            "Ready",
            "Lag",
            "Last Checkpoint",
            "Age"
        ]
    );
}

#[test]
fn every_spec_field_is_documented() {
    let crd = StreamJob::crd();
    let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
    let mut undocumented = Vec::new();
    walk(
        &schema["openAPIV3Schema"]["properties"]["spec"],
        "spec",
        &mut undocumented,
    );
    assert!(
        undocumented.is_empty(),
        "fields without a description: {undocumented:#?}"
    );
}

fn walk(schema: &serde_json::Value, path: &str, undocumented: &mut Vec<String>) {
    let Some(properties) = schema.get("properties").and_then(|p| p.as_object()) else {
        if let Some(items) = schema.get("items") {
            walk(items, &format!("{path}[]"), undocumented);
        }
        return;
    };
    for (name, property) in properties {
        let field = format!("{path}.{name}");
        if property.get("description").is_none() {
            undocumented.push(field.clone());
        }
        walk(property, &field, undocumented);
    }
}
