//! The Helm chart lints and its sources agree: `helm lint --strict` in both RBAC modes and the
//! packaged chart's files; the values schema refusing a misspelt or wrong value by name; the
//! chart's CRD and `manifests/install.yaml` up to date with their sources.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use oxbow_tests::{
    chart::watch,
    repo_root, scratch_dir,
    tools::{helm, helm_path, run},
    yaml::{documents, one_of_kind},
};
use serde_json::Value;

#[test]
fn the_chart_lints_strictly_in_both_rbac_modes() {
    for sets in [
        vec![],
        vec![watch(&["team-a", "team-b"])],
        vec![
            "metrics.serviceMonitor.enabled=true".to_owned(),
            "worker.podMonitor.enabled=true".to_owned(),
            "podDisruptionBudget.enabled=true".to_owned(),
        ],
    ] {
        let mut command = helm();
        command.args(["lint", "--strict", "charts/oxbow"]);
        for set in &sets {
            command.args(["--set", set]);
        }
        let out = run(&mut command, None).unwrap();
        assert!(
            out.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{out}"
        );
        assert!(!out.contains("[WARNING]"), "{sets:?}: {out}");
    }
    // The packaged chart carries the CRD and the values schema.
    let dir = scratch_dir("oxbow-package");
    run(
        helm()
            .args(["package", "charts/oxbow", "--destination"])
            .arg(&dir),
        None,
    )
    .unwrap();
    let package = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let listing = run(Command::new("tar").arg("-tzf").arg(&package), None).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    for file in [
        "oxbow/crds/streamjobs.oxbow.dev.yaml",
        "oxbow/values.schema.json",
        "oxbow/templates/rbac.yaml",
    ] {
        assert!(
            listing.lines().any(|l| l == file),
            "{file} not in {listing}"
        );
    }
}

#[test]
fn a_misspelt_or_wrong_value_fails_naming_it() {
    for (set, says) in [
        (
            "worker.networkPolicy.enable=false",
            "worker.networkPolicy: Additional property enable is not allowed",
        ),
        ("imagee.tag=1", "Additional property imagee is not allowed"),
        ("log.format=yaml", "log.format must be one of the following"),
        (
            "watchNamespaces={Team_A}",
            "watchNamespaces.0: Does not match pattern",
        ),
    ] {
        let err = run(
            helm().args(["template", "x", "charts/oxbow", "--set", set]),
            None,
        )
        .expect_err(set)
        .to_string();
        assert!(err.contains(says), "--set {set}: {err}");
    }
    let err = run(
        helm().args([
            "template",
            "x",
            "charts/oxbow",
            "--set",
            "leaderElection.enabled=false",
        ]),
        None,
    )
    .expect_err("two replicas without leader election")
    .to_string();
    assert!(
        err.contains("replicaCount above 1 needs leaderElection.enabled"),
        "{err}"
    );
}

#[test]
fn install_files_are_up_to_date_with_their_sources() {
    let root = repo_root();
    let generated = std::fs::read(root.join("crds/streamjobs.oxbow.dev.yaml")).unwrap();
    let chart_copy =
        std::fs::read(root.join("charts/oxbow/crds/streamjobs.oxbow.dev.yaml")).unwrap();
    assert!(
        generated == chart_copy,
        "charts/oxbow/crds/ differs from the generated CRD: run manifests/generate.sh"
    );
    let install = std::fs::read_to_string(root.join("manifests/install.yaml")).unwrap();
    let docs = documents(&install);
    let crd = one_of_kind(&docs, "CustomResourceDefinition");
    let source: Value = serde_norway::from_slice(&generated).unwrap();
    assert_eq!(*crd, source, "install.yaml's CRD is not the generated one");
    // The script CI runs: install.yaml equals the chart rendered with its default values.
    let helm_path = helm_path();
    run(
        Command::new("bash")
            .arg(root.join("manifests/generate.sh"))
            .arg("--check")
            .env("HELM", helm_path),
        None,
    )
    .unwrap();
}
