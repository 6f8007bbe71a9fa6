//! The S3-compatible object store (moto).

use anyhow::Context;
use object_store::aws::{AmazonS3, AmazonS3Builder};

use crate::{Component, component};

/// A client for the test bucket, configured for a loopback S3 server: plain HTTP, path-style
/// requests, static keys.
pub fn bucket() -> anyhow::Result<AmazonS3> {
    let vars = component(Component::S3);
    AmazonS3Builder::new()
        .with_endpoint(vars.get("OXBOW_TEST_S3_ENDPOINT")?)
        .with_bucket_name(vars.get("OXBOW_TEST_S3_BUCKET")?)
        .with_access_key_id(vars.optional("AWS_ACCESS_KEY_ID").unwrap_or("test"))
        .with_secret_access_key(vars.optional("AWS_SECRET_ACCESS_KEY").unwrap_or("test"))
        .with_region(vars.optional("AWS_REGION").unwrap_or("us-east-1"))
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .build()
        .context("failed to configure the S3 client")
}

/// The environment a worker needs to use the test bucket's server: object_store reads its S3
/// settings from the environment, as in a pod.
pub fn worker_env() -> anyhow::Result<Vec<(String, String)>> {
    let vars = component(Component::S3);
    Ok(env(
        vars.get("OXBOW_TEST_S3_ENDPOINT")?,
        vars.optional("AWS_ACCESS_KEY_ID").unwrap_or("test"),
        vars.optional("AWS_SECRET_ACCESS_KEY").unwrap_or("test"),
        vars.optional("AWS_REGION").unwrap_or("us-east-1"),
    ))
}

fn env(endpoint: &str, key: &str, secret: &str, region: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", key),
        ("AWS_SECRET_ACCESS_KEY", secret),
        ("AWS_REGION", region),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A moto S3 server of one test's own, for fault injection (pausing it must not disturb other
/// tests). Stopped when dropped.
#[derive(Debug)]
pub struct PrivateS3 {
    child: std::process::Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
}

impl PrivateS3 {
    /// Starts moto from the environment's virtualenv on a free port and creates `bucket`.
    pub async fn start(bucket: &str) -> anyhow::Result<Self> {
        let cache = crate::cache_dir()?;
        let python = cache.join("venv/bin/python");
        let port = crate::worker::free_port();
        let child = std::process::Command::new(&python)
            .arg(crate::repo_root().join("tests/env/moto_server.py"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("failed to start moto with {}", python.display()))?;
        let server = PrivateS3 {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        let url = format!("{}/{bucket}", server.endpoint);
        crate::eventually(
            "moto to create the bucket",
            std::time::Duration::from_secs(30),
            async || {
                let r = http.put(&url).send().await.ok()?;
                r.status().is_success().then_some(())
            },
        )
        .await?;
        Ok(server)
    }

    /// SIGSTOP: the server keeps its sockets and data but answers nothing.
    pub fn pause(&self) -> anyhow::Result<()> {
        crate::worker::signal(self.child.id(), "STOP")
    }

    /// SIGCONT.
    pub fn resume(&self) -> anyhow::Result<()> {
        crate::worker::signal(self.child.id(), "CONT")
    }

    /// The environment a worker needs to use this server.
    pub fn worker_env(&self) -> Vec<(String, String)> {
        env(&self.endpoint, "test", "test", "us-east-1")
    }
}

impl Drop for PrivateS3 {
    fn drop(&mut self) {
        let _ = crate::worker::signal(self.child.id(), "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
