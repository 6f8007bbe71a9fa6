//! The README's first command: `oxbow-worker local` runs a shipped example on an embedded
//! broker with generated input, prints results, and exits cleanly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn run_example(example: &str, duration: &str) -> (String, String) {
    let dir = std::env::temp_dir().join(format!("oxbow-local-{}-{example}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = format!(
        "{}/../manifests/examples/{example}",
        env!("CARGO_MANIFEST_DIR")
    );
    let output = Command::new(env!("CARGO_BIN_EXE_oxbow-worker"))
        .args(["local", &manifest, "--duration", duration])
        .current_dir(&dir)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    assert!(
        output.status.success(),
        "{example}: {}\n{stderr}",
        output.status
    );
    assert!(dir.join(".oxbow").exists(), "checkpoints go to ./.oxbow");
    std::fs::remove_dir_all(&dir).ok();
    (stdout, stderr)
}

#[test]
fn the_fraud_example_reports_the_fraudulent_accounts() {
    let (stdout, stderr) = run_example("fraud-detector.yaml", "8s");
    let alerts: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!alerts.is_empty(), "no alerts; stderr:\n{stderr}");
    for alert in &alerts {
        assert!(alert["total"].as_f64().unwrap() > 10_000.0, "{alert}");
        let account = alert["account"].as_str().unwrap();
        assert!(
            account == "acct-7" || account == "acct-13",
            "only the fraudulent accounts: {alert}"
        );
    }
    assert!(
        stderr.contains("(embedded)") && stderr.contains("dead-lettered 0"),
        "{stderr}"
    );
}

#[test]
fn the_clickstream_example_closes_sessions() {
    let (stdout, _) = run_example("clickstream-sessions.yaml", "5s");
    let sessions: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(sessions.len() > 5, "{stdout}");
    for s in &sessions {
        assert!(
            s["views"].as_i64().unwrap() >= s["pages"].as_i64().unwrap(),
            "{s}"
        );
        assert!(
            s["window_end"].as_i64().unwrap() - s["window_start"].as_i64().unwrap()
                >= 30 * 60 * 1000,
            "{s}"
        );
    }
}

#[test]
fn a_bad_manifest_is_refused_with_its_problems() {
    let dir = std::env::temp_dir().join(format!("oxbow-local-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    let good = std::fs::read_to_string(format!(
        "{}/../manifests/examples/fraud-detector.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    std::fs::write(&bad, good.replace("\"amount > 0.0\"", "\"amount >\"")).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_oxbow-worker"))
        .args(["local"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("spec.pipeline[0].filter"), "{stderr}");
    let missing = Command::new(env!("CARGO_BIN_EXE_oxbow-worker"))
        .args(["local", "nope.yaml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("failed to read nope.yaml"));
    std::fs::remove_dir_all(&dir).ok();
}
