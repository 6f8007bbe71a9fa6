//! Health that GitOps tools read, checked against StreamJobs the real operator produced.
//!
//! Argo CD: `manifests/argocd/oxbow.dev/StreamJob/health.lua` runs on every case of
//! `health_test.yaml` (Argo CD's own test format) and must give its status and message: in
//! Lua 5.1 built from source (mlua) with only the libraries Argo CD gives a custom health
//! check, and in gopher-lua, Argo CD's own interpreter, from Debian. The `argocd-cm` patch must
//! carry exactly that script.
//!
//! Flux: every fixture also goes through kstatus's rules for a custom resource, written out in
//! [`kstatus`] from `sigs.k8s.io/cli-utils/pkg/kstatus/status`, and must give the status in
//! [`KSTATUS`].
//!
//! The fixtures are whole StreamJobs recorded from the integration tests
//! (`OXBOW_RECORD_STATUSES`, see `tests/src/record.rs`); each says where it came from.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeSet, path::PathBuf};

use mlua::{Lua, LuaOptions, StdLib, Value};
use serde_json::Value as Json;

fn check_dir() -> PathBuf {
    oxbow_tests::repo_root().join("manifests/argocd/oxbow.dev/StreamJob")
}

/// `health_test.yaml`, in Argo CD's format.
#[derive(serde::Deserialize)]
struct HealthTests {
    tests: Vec<HealthTest>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct HealthTest {
    health_status: HealthStatus,
    input_path: String,
}

#[derive(serde::Deserialize, Debug, PartialEq)]
struct HealthStatus {
    status: String,
    message: String,
}

fn health_tests() -> Vec<HealthTest> {
    let text = std::fs::read_to_string(check_dir().join("health_test.yaml")).unwrap();
    serde_norway::from_str::<HealthTests>(&text).unwrap().tests
}

fn fixture(input_path: &str) -> Json {
    let path = check_dir().join(input_path);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("failed to read {}: {e}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn testdata() -> BTreeSet<String> {
    std::fs::read_dir(check_dir().join("testdata"))
        .unwrap()
        .map(|e| format!("testdata/{}", e.unwrap().file_name().to_string_lossy()))
        .filter(|p| p.ends_with(".yaml"))
        .collect()
}

// --- Argo CD ----------------------------------------------------------------------------------

/// A Lua 5.1 state with what Argo CD opens for a custom health check (`util/lua/lua.go`,
/// `runLua`: package, base and table, plus a reduced os that this script does not use; not
/// string, not math).
fn argo_lua() -> Lua {
    Lua::new_with(StdLib::PACKAGE | StdLib::TABLE, LuaOptions::default()).unwrap()
}

/// Runs `script` on `obj` as Argo CD does: `obj` a global table decoded from the object's JSON
/// (null as nil, every number a Lua number), the returned table's `status` and `message`.
fn run_health(script: &str, obj: &Json) -> mlua::Result<HealthStatus> {
    let lua = argo_lua();
    lua.globals().set("obj", to_lua(&lua, obj)?)?;
    let result: mlua::Table = lua.load(script).set_name("health.lua").eval()?;
    Ok(HealthStatus {
        status: result.get("status")?,
        message: result.get::<Option<String>>("message")?.unwrap_or_default(),
    })
}

/// The object as Argo CD's `decodeValue` gives it to Lua.
fn to_lua(lua: &Lua, value: &Json) -> mlua::Result<Value> {
    Ok(match value {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
        Json::String(s) => Value::String(lua.create_string(s)?),
        Json::Array(items) => {
            let table = lua.create_table()?;
            for item in items {
                table.raw_push(to_lua(lua, item)?)?;
            }
            Value::Table(table)
        }
        Json::Object(fields) => {
            let table = lua.create_table()?;
            for (k, v) in fields {
                table.raw_set(k.as_str(), to_lua(lua, v)?)?;
            }
            Value::Table(table)
        }
    })
}

fn health_script() -> String {
    std::fs::read_to_string(check_dir().join("health.lua")).unwrap()
}

#[test]
fn argo_cd_health_of_every_recorded_status_is_as_health_test_yaml_says() {
    let script = health_script();
    let tests = health_tests();
    let mut failures = Vec::new();
    for test in &tests {
        let got = run_health(&script, &fixture(&test.input_path))
            .unwrap_or_else(|e| panic!("health.lua failed on {}: {e}", test.input_path));
        if got != test.health_status {
            failures.push(format!(
                "{}: want {:?}, got {got:?}",
                test.input_path, test.health_status
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let listed: BTreeSet<String> = tests.iter().map(|t| t.input_path.clone()).collect();
    assert_eq!(
        listed,
        testdata(),
        "health_test.yaml lists every fixture, and only those"
    );
}

/// The same cases in gopher-lua, Argo CD's own interpreter, through `tests/argocd/health.go`
/// (Argo CD's `runLua` restated). `tests/env/install.sh lua` installs it from Debian; the test
/// runs the installer itself, a no-op once it is there.
#[test]
fn argo_cd_health_in_gopher_lua_is_as_health_test_yaml_says() {
    let root = oxbow_tests::repo_root();
    let install = std::process::Command::new("bash")
        .arg(root.join("tests/env/install.sh"))
        .arg("lua")
        .output()
        .unwrap();
    assert!(
        install.status.success(),
        "tests/env/install.sh lua failed:\n{}",
        String::from_utf8_lossy(&install.stderr)
    );
    let dir = std::env::temp_dir().join(oxbow_tests::unique_name("oxbow-argocd-health"));
    std::fs::create_dir_all(&dir).unwrap();
    let tests = health_tests();
    let inputs: Vec<PathBuf> = tests
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let path = dir.join(format!("{i}.json"));
            std::fs::write(&path, fixture(&t.input_path).to_string()).unwrap();
            path
        })
        .collect();
    let go = std::env::var_os("OXBOW_GO").unwrap_or_else(|| "/usr/lib/go-1.19/bin/go".into());
    let output = std::process::Command::new(go)
        .arg("run")
        .arg(root.join("tests/argocd/health.go"))
        .arg(check_dir().join("health.lua"))
        .args(&inputs)
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOFLAGS", "")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        output.status.success(),
        "go run tests/argocd/health.go failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Vec<Json> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), tests.len());
    let mut failures = Vec::new();
    for (test, got) in tests.iter().zip(&results) {
        let got = HealthStatus {
            status: got["status"].as_str().unwrap_or_default().to_owned(),
            message: got["message"].as_str().unwrap_or_default().to_owned(),
        };
        if got != test.health_status {
            failures.push(format!(
                "{}: want {:?}, got {got:?}",
                test.input_path, test.health_status
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn argo_cd_health_statuses_are_the_ones_argo_cd_accepts() {
    // Argo CD turns any other status into Unknown ("Lua returned an invalid health status").
    let valid = [
        "Healthy",
        "Progressing",
        "Degraded",
        "Suspended",
        "Missing",
        "Unknown",
    ];
    for test in health_tests() {
        assert!(
            valid.contains(&test.health_status.status.as_str()),
            "{}",
            test.input_path
        );
        assert!(
            !test.health_status.message.is_empty(),
            "{}: a message says why",
            test.input_path
        );
    }
}

#[test]
fn the_lua_state_lacks_what_argo_cd_withholds() {
    // A script leaning on the string library passes nowhere but here unless this holds.
    let obj = serde_json::json!({"status": {"phase": "Running"}});
    let err = run_health(
        r#"return {status = string.format("%s", obj.status.phase)}"#,
        &obj,
    );
    assert!(err.is_err(), "string library available: {err:?}");
    let err = run_health(r#"return {status = ("x"):upper()}"#, &obj);
    assert!(err.is_err(), "string methods available: {err:?}");
    let ok = run_health(
        r#"return {status = "Healthy", message = "x" .. tostring(obj.status.phase)}"#,
        &obj,
    )
    .unwrap();
    assert_eq!(ok.message, "xRunning");
}

#[test]
fn the_argocd_cm_patch_carries_exactly_health_lua() {
    let script = health_script();
    let path = oxbow_tests::repo_root().join("manifests/argocd/argocd-cm-patch.yaml");
    let want = argocd_cm_patch(&script);
    if std::env::var_os("OXBOW_WRITE_GENERATED").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let got = std::fs::read_to_string(&path).unwrap();
    assert!(
        got == want,
        "{} is generated from health.lua; regenerate it with OXBOW_WRITE_GENERATED=1 cargo test -p oxbow-tests --test gitops_health",
        path.display()
    );
    // And YAML reads the block back as the very script.
    let parsed: Json = serde_norway::from_str(&got).unwrap();
    assert_eq!(
        parsed["data"]["resource.customizations.health.oxbow.dev_StreamJob"],
        Json::String(script)
    );
}

/// The `argocd-cm` patch: health.lua as a literal block, indented four spaces.
fn argocd_cm_patch(script: &str) -> String {
    let mut out = String::from(
        "# Generated from argocd/oxbow.dev/StreamJob/health.lua by tests/tests/gitops_health.rs;\n\
         # do not edit. Apply with:\n\
         #   kubectl -n argocd patch configmap argocd-cm --type merge --patch-file argocd-cm-patch.yaml\n\
         apiVersion: v1\n\
         kind: ConfigMap\n\
         metadata:\n  name: argocd-cm\n\
         data:\n  resource.customizations.health.oxbow.dev_StreamJob: |\n",
    );
    for line in script.lines() {
        if line.is_empty() {
            out.push('\n');
        } else {
            out.push_str("    ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

// --- Flux (kstatus) ---------------------------------------------------------------------------

/// The kstatus status each fixture (`testdata/<name>.yaml`) must have, with the start of its
/// message. Where kstatus and
/// Argo CD part ways, the line says so (manifests/argocd/README.md explains each).
const KSTATUS: &[(&str, &str, &str)] = &[
    // kstatus cannot tell a resource its controller has not seen from a settled one.
    ("no-status", "Current", "Resource is current"),
    (
        "first-record-without-observed-generation",
        "Current",
        "Resource is current",
    ),
    ("deploying", "InProgress", "Deploying"),
    ("running", "Current", "Resource is Ready"),
    (
        "generation-ahead",
        "InProgress",
        "StreamJob generation is 2, but latest observed generation is 1",
    ),
    (
        "rescale-recorded-before-observed",
        "InProgress",
        "StreamJob generation is 2, but latest observed generation is 1",
    ),
    ("rescaling-savepointing", "InProgress", "Rescaling"),
    ("rescaling-rolling-out", "InProgress", "Rescaling"),
    ("rescaling-verifying", "InProgress", "Rescaling"),
    ("savepointing", "InProgress", "Savepointing"),
    ("suspending", "InProgress", "Suspending"),
    // Ready False while suspended: a Flux wait on a suspended job never ends.
    ("suspended", "InProgress", "the job is suspended"),
    ("resuming", "InProgress", "Deploying"),
    ("upgrading-savepointing", "InProgress", "Upgrading"),
    ("upgrading-fencing", "InProgress", "Upgrading"),
    ("upgrading-verifying", "InProgress", "Upgrading"),
    (
        "upgrade-blocked",
        "Failed",
        "worker 0 failed savepoint upgrade-",
    ),
    (
        "upgrade-blocked-workers-restarting",
        "Failed",
        "worker 0 failed savepoint upgrade-",
    ),
    ("upgrading-last-state", "InProgress", "Upgrading"),
    (
        "worker-restarting",
        "InProgress",
        "not every worker is restored and processing",
    ),
    (
        "invalid-spec",
        "Failed",
        "spec.pipeline[0].filter: \"amount >\" is not a valid CEL expression",
    ),
    ("rolling-back", "InProgress", "RollingBack"),
    // Ready and not Stalled: kstatus sees a healthy job where Argo CD sees Degraded.
    ("rolled-back", "Current", "Resource is Ready"),
    ("checkpoint-stale", "Current", "Resource is Ready"),
    (
        "checkpoint-stale-not-consuming",
        "InProgress",
        "not every worker is restored and processing",
    ),
    ("lag-high", "Current", "Resource is Ready"),
    (
        "worker-failed",
        "InProgress",
        "not every worker is restored and processing",
    ),
];

/// kstatus's verdict on a custom resource, as `status.Compute` of
/// `sigs.k8s.io/cli-utils/pkg/kstatus/status` reaches it (`status.go`, `generic.go`) for a kind
/// with no built-in rules:
///
/// 1. `metadata.deletionTimestamp` set: Terminating.
/// 2. `checkGeneration`: when `status.observedGeneration` is present and differs from
///    `metadata.generation`: InProgress ("<Kind> generation is G, but latest observed generation
///    is O"). An absent observedGeneration skips this check.
/// 3. The first condition, in list order, that is `Reconciling` True gives InProgress, or
///    `Stalled` True gives Failed, with the condition's message.
/// 4. `checkReadyCondition`: a `Ready` condition True gives Current ("Resource is Ready");
///    False or Unknown gives InProgress with its message.
/// 5. Otherwise Current ("Resource is current"), which is also what an object with no status
///    at all gets.
fn kstatus(obj: &Json) -> (&'static str, String) {
    let meta = &obj["metadata"];
    if meta["deletionTimestamp"]
        .as_str()
        .is_some_and(|t| !t.is_empty())
    {
        return ("Terminating", "Resource scheduled for deletion".into());
    }
    let status = &obj["status"];
    if let (Some(generation), Some(observed)) = (
        meta["generation"].as_i64(),
        status["observedGeneration"].as_i64(),
    ) && generation != observed
    {
        let kind = obj["kind"].as_str().unwrap_or_default();
        return (
            "InProgress",
            format!(
                "{kind} generation is {generation}, but latest observed generation is {observed}"
            ),
        );
    }
    let conditions = status["conditions"].as_array().cloned().unwrap_or_default();
    let message = |c: &Json| c["message"].as_str().unwrap_or_default().to_owned();
    for c in &conditions {
        if c["status"] == "True" && c["type"] == "Reconciling" {
            return ("InProgress", message(c));
        }
        if c["status"] == "True" && c["type"] == "Stalled" {
            return ("Failed", message(c));
        }
    }
    if let Some(ready) = conditions.iter().find(|c| c["type"] == "Ready") {
        match ready["status"].as_str() {
            Some("True") => return ("Current", "Resource is Ready".into()),
            Some("False" | "Unknown") => return ("InProgress", message(ready)),
            _ => {}
        }
    }
    ("Current", "Resource is current".into())
}

#[test]
fn kstatus_of_every_recorded_status_is_as_expected() {
    let mut failures = Vec::new();
    for (name, want, message) in KSTATUS {
        let input = format!("testdata/{name}.yaml");
        let (got, got_message) = kstatus(&fixture(&input));
        if got != *want || !got_message.starts_with(message) {
            failures.push(format!(
                "{input}: want {want} {message:?}..., got {got} {got_message:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let listed: BTreeSet<String> = KSTATUS
        .iter()
        .map(|(name, _, _)| format!("testdata/{name}.yaml"))
        .collect();
    assert_eq!(
        listed,
        testdata(),
        "KSTATUS lists every fixture, and only those"
    );
}

#[test]
fn kstatus_rules_follow_the_library() {
    // The cases of cli-utils' own tests for the generic path, on a bare custom resource.
    let cr = |generation: i64, status: Json| {
        serde_json::json!({
            "apiVersion": "oxbow.dev/v1alpha1", "kind": "StreamJob",
            "metadata": {"name": "x", "generation": generation}, "status": status,
        })
    };
    let cond = |t: &str, s: &str| serde_json::json!({"type": t, "status": s, "reason": "R", "message": format!("{t} {s}")});
    assert_eq!(
        kstatus(&cr(2, serde_json::json!({"observedGeneration": 1}))),
        (
            "InProgress",
            "StreamJob generation is 2, but latest observed generation is 1".into()
        )
    );
    assert_eq!(kstatus(&cr(1, Json::Null)).0, "Current");
    let both = serde_json::json!({"observedGeneration": 1, "conditions": [cond("Stalled", "True"), cond("Reconciling", "True")]});
    assert_eq!(kstatus(&cr(1, both)), ("Failed", "Stalled True".into()));
    let ready =
        serde_json::json!({"observedGeneration": 1, "conditions": [cond("Ready", "False")]});
    assert_eq!(kstatus(&cr(1, ready)), ("InProgress", "Ready False".into()));
    let ready = serde_json::json!({"observedGeneration": 1, "conditions": [cond("Reconciling", "False"), cond("Ready", "True")]});
    assert_eq!(kstatus(&cr(1, ready)).0, "Current");
    let mut deleting = cr(1, Json::Null);
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
    assert_eq!(kstatus(&deleting).0, "Terminating");
}
