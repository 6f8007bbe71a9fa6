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
