//! The command-line tools the install tests drive — Helm, kubectl, checkov — as
//! `tests/env/install.sh` caches them, and running a command for its output.

use std::{
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context, bail};

use crate::{Component, component, repo_root};

/// A tool `tests/env/install.sh <component>` caches at `<cache>/<path>`; panics naming the
/// install command when it is missing.
pub fn cached(path: &str, component: &str) -> PathBuf {
    let cache = match crate::cache_dir() {
        Ok(cache) => cache,
        Err(e) => panic!("{e:#}"),
    };
    let path = cache.join(path);
    assert!(
        path.exists(),
        "{} is missing: run `bash tests/env/install.sh {component}`",
        path.display()
    );
    path
}

/// The Helm binary: `OXBOW_TEST_HELM`, or the cached one.
pub fn helm_path() -> PathBuf {
    std::env::var_os("OXBOW_TEST_HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| cached("bin/helm", "helm"))
}

/// Helm in the repository root, with caches and repositories of its own, away from the user's.
pub fn helm() -> Command {
    let mut command = Command::new(helm_path());
    let home = std::env::temp_dir().join(format!("oxbow-helm-{}", std::process::id()));
    command
        .current_dir(repo_root())
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    command
}

/// The test control plane's kubeconfig, with administrator rights.
pub fn admin_kubeconfig() -> &'static str {
    match component(Component::Kubernetes).get("OXBOW_TEST_KUBECONFIG") {
        Ok(path) => path,
        Err(e) => panic!("{e:#}"),
    }
}

/// Helm against the test control plane, as its administrator.
pub fn helm_in_cluster() -> Command {
    let mut command = helm();
    command.env("KUBECONFIG", admin_kubeconfig());
    command
}

/// kubectl in the repository root against the test control plane, as its administrator.
pub fn kubectl() -> Command {
    let mut command = Command::new(cached("bin/kubectl", "helm"));
    command
        .current_dir(repo_root())
        .env("KUBECONFIG", admin_kubeconfig());
    command
}

/// Runs `command` with `stdin`, returning its standard output, or an error with all it said.
pub fn run(command: &mut Command, stdin: Option<&str>) -> anyhow::Result<String> {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .with_context(|| format!("failed to start {command:?}"))?;
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .context("no stdin")?
            .write_all(text.as_bytes())
            .context("failed to write stdin")?;
    }
    let output = child.wait_with_output().context("failed to wait")?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}):\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_returns_stdout_and_feeds_stdin() {
        let out = run(Command::new("cat").arg("-"), Some("piped\n")).unwrap();
        assert_eq!(out, "piped\n");
    }

    #[test]
    fn a_failing_command_says_all_it_printed() {
        let err = run(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("exit status: 3"), "{err}");
        assert!(err.contains("out\n") && err.contains("err\n"), "{err}");
    }
}
