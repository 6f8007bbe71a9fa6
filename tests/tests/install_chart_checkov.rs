//! checkov over the rendered chart (both RBAC modes, every optional object), the plain
//! manifests and the Dockerfile: nothing failed, every skip with its reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeSet, process::Command};

use oxbow_tests::{
    chart::{render, watch},
    repo_root, scratch_dir, tools,
};
use serde_json::Value;

#[test]
fn checkov_passes_the_chart_the_manifests_and_the_dockerfile() {
    let checkov = tools::cached("venv-checkov/bin/checkov", "checkov");
    let dir = scratch_dir("oxbow-checkov");
    let everything = [
        "metrics.serviceMonitor.enabled=true",
        "worker.podMonitor.enabled=true",
        "podDisruptionBudget.enabled=true",
    ];
    std::fs::write(
        dir.join("chart-cluster.yaml"),
        render("oxbow", "oxbow-system", &everything).unwrap(),
    )
    .unwrap();
    let mut listed = everything.to_vec();
    let namespaces = watch(&["team-a", "team-b"]);
    listed.push(&namespaces);
    std::fs::write(
        dir.join("chart-namespaced.yaml"),
        render("oxbow", "oxbow-system", &listed).unwrap(),
    )
    .unwrap();
    for file in [
        "manifests/install.yaml",
        "manifests/kustomization.yaml",
        "Dockerfile",
    ] {
        let from = repo_root().join(file);
        std::fs::copy(&from, dir.join(from.file_name().unwrap())).unwrap();
    }
    let out = Command::new(&checkov)
        .current_dir(repo_root())
        .args([
            "--config-file",
            ".checkov.yaml",
            "--output",
            "json",
            "--directory",
        ])
        .arg(&dir)
        .args(["--file", "Dockerfile"])
        // No telemetry, no platform: the machines running this reach no network.
        .env("BC_SKIP_MAPPING", "TRUE")
        .env("CHECKOV_RUN_SCA_PACKAGE_SCAN_V2", "false")
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "checkov printed no JSON report ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let reports = match report {
        Value::Array(reports) => reports,
        one => vec![one],
    };
    let mut frameworks = BTreeSet::new();
    for report in &reports {
        let framework = report["check_type"].as_str().unwrap_or_default().to_owned();
        let summary = &report["summary"];
        assert!(
            summary["passed"].as_u64().unwrap() > 0,
            "{framework}: {summary}"
        );
        let failed: Vec<String> = report["results"]["failed_checks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| format!("{} {} ({})", c["check_id"], c["resource"], c["file_path"]))
            .collect();
        assert!(
            failed.is_empty(),
            "{framework}: failed checks:\n{}",
            failed.join("\n")
        );
        for skipped in report["results"]["skipped_checks"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let reason = skipped["check_result"]["suppress_comment"]
                .as_str()
                .unwrap_or_default();
            assert!(
                reason.split_whitespace().count() >= 5,
                "{framework}: {} on {} is skipped without a reason: {reason:?}",
                skipped["check_id"],
                skipped["resource"]
            );
        }
        frameworks.insert(framework);
    }
    assert_eq!(
        frameworks,
        BTreeSet::from(["dockerfile".to_owned(), "kubernetes".to_owned()]),
        "checkov scanned the wrong things"
    );
    assert!(out.status.success(), "checkov exited {}", out.status);
}
