//! Test support: the real components of Oxbow's integration and end-to-end tests.
//!
//! Each component comes from the environment when its variables are set (as `tests/run.sh`
//! does after `tests/env/up.sh`, or a user pointing the suite at their own Kafka with
//! `OXBOW_TEST_BOOTSTRAP`), and is otherwise started by this process with `tests/env/up.sh
//! --watch-pid <pid>`, whose watchdog stops it when the test process exits.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use anyhow::{Context, bail};

pub mod chart;
pub mod dockerfile;
pub mod kafka;
pub mod kube_env;
pub mod kubelet;
pub mod lifecycle;
pub mod manifest;
pub mod operator;
pub mod record;
pub mod s3;
pub mod tools;
pub mod wait;
pub mod windows;
pub mod worker;
pub mod yaml;

pub use wait::{Wait, eventually};

/// A component of the test environment, as `tests/env/up.sh` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// etcd, kube-apiserver and kube-controller-manager 1.20.
    Kubernetes,
    /// noida-db and Tansu.
    Kafka,
    /// moto's S3 server.
    S3,
}

impl Component {
    fn arg(self) -> &'static str {
        match self {
            Component::Kubernetes => "k8s",
            Component::Kafka => "kafka",
            Component::S3 => "s3",
        }
    }

    /// The variable whose presence means the component is already provided.
    fn marker(self) -> &'static str {
        match self {
            // Never plain KUBECONFIG: it may point at a real cluster.
            Component::Kubernetes => "OXBOW_TEST_KUBECONFIG",
            Component::Kafka => "OXBOW_TEST_BOOTSTRAP",
            Component::S3 => "OXBOW_TEST_S3_ENDPOINT",
        }
    }
}

/// The variables describing one component.
#[derive(Clone, Debug)]
pub struct Vars(BTreeMap<String, String>);

impl Vars {
    /// A variable, or an error naming it.
    pub fn get(&self, name: &str) -> anyhow::Result<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .with_context(|| format!("the test environment does not define {name}"))
    }

    /// A variable if defined.
    pub fn optional(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// The variables of `component`, starting it if the environment does not provide it.
///
/// Panics with the reason when the component cannot be had: a test that needs a component
/// must not pass without it.
pub fn component(component: Component) -> &'static Vars {
    static KUBE: OnceLock<Vars> = OnceLock::new();
    static KAFKA: OnceLock<Vars> = OnceLock::new();
    static S3: OnceLock<Vars> = OnceLock::new();
    let cell = match component {
        Component::Kubernetes => &KUBE,
        Component::Kafka => &KAFKA,
        Component::S3 => &S3,
    };
    cell.get_or_init(|| match provide(component) {
        Ok(vars) => vars,
        Err(e) => panic!(
            "the {} test component is not available: {e:#}",
            component.arg()
        ),
    })
}

fn provide(component: Component) -> anyhow::Result<Vars> {
    if std::env::var_os(component.marker()).is_some() {
        return Ok(Vars(std::env::vars().collect()));
    }
    start(component)
}

/// Where `tests/env/install.sh` caches the components: `OXBOW_CACHE`, or `~/.cache/oxbow`.
pub fn cache_dir() -> anyhow::Result<PathBuf> {
    std::env::var_os("OXBOW_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/oxbow")))
        .context("neither OXBOW_CACHE nor HOME is set")
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

fn start(component: Component) -> anyhow::Result<Vars> {
    let script = repo_root().join("tests/env/up.sh");
    let output = Command::new("bash")
        .arg(&script)
        .arg("--watch-pid")
        .arg(std::process::id().to_string())
        .arg(component.arg())
        .env_remove("OXBOW_ENV_DIR")
        .output()
        .with_context(|| format!("failed to run {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "{} {} failed ({}):\n{}",
            script.display(),
            component.arg(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8(output.stdout).context("up.sh printed non-UTF-8")?;
    let mut vars: BTreeMap<String, String> = std::env::vars().collect();
    vars.extend(parse_exports(&stdout));
    Ok(Vars(vars))
}

/// Parses `export NAME=value` lines; values may be shell-quoted by `printf %q`.
pub fn parse_exports(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("export "))
        .filter_map(|assignment| assignment.split_once('='))
        .map(|(name, value)| (name.to_owned(), unquote(value)))
        .collect()
}

fn unquote(value: &str) -> String {
    if let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        return inner.to_owned();
    }
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// A name unique to this test run, for topics, buckets, namespaces and groups.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{:x}", std::process::id(), nanos % 0x10000)
}

/// Milliseconds since the Unix epoch: event times near now, which a broker's retention keeps.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A new empty directory of this test's own under the system's temporary directory.
pub fn scratch_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique_name(prefix));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("failed to create {}: {e}", dir.display());
    }
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_up_sh_exports() {
        let vars = parse_exports(
            "export KUBECONFIG=/tmp/oxbow-env.x/kubeconfig\nexport A=with\\ space\nnoise\nexport B='q'\n",
        );
        assert_eq!(vars["KUBECONFIG"], "/tmp/oxbow-env.x/kubeconfig");
        assert_eq!(vars["A"], "with space");
        assert_eq!(vars["B"], "q");
        assert_eq!(vars.len(), 3);
    }
}
