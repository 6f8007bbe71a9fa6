//! The Secret `<job>-admin`: the token the operator presents to the workers' admin API.

use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret};
use oxbow_crds::{StreamJob, jobfile::ADMIN_TOKEN_KEY};

use super::{BuildError, meta::Owner, names};

/// The Secret `<job>-admin` holding `token` under [`ADMIN_TOKEN_KEY`].
///
/// The controller generates the token once and keeps it (reading it back from this Secret), so
/// that re-applying never rotates it under running workers. Written as `data`, not
/// `stringData`: `stringData` is write-only, and server-side apply would see a difference on
/// every reconcile.
pub fn admin_secret(job: &StreamJob, token: &str) -> Result<Secret, BuildError> {
    let owner = Owner::of(job)?;
    Ok(Secret {
        metadata: owner.object_meta(names::admin_secret(&owner.name)),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            ADMIN_TOKEN_KEY.to_owned(),
            ByteString(token.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::fixtures::stream_job;

    #[test]
    fn the_token_is_stored_under_the_key_the_worker_reads() {
        let secret = admin_secret(&stream_job(), "s3cr3t").unwrap();
        assert_eq!(secret.metadata.name.as_deref(), Some("fraud-admin"));
        assert_eq!(secret.type_.as_deref(), Some("Opaque"));
        assert!(secret.string_data.is_none());
        let data = secret.data.unwrap();
        assert_eq!(data.len(), 1);
        assert_eq!(data["token"].0, b"s3cr3t");
        // On the wire, base64 as the API server expects.
        let json = serde_json::to_value(ByteString(b"s3cr3t".to_vec())).unwrap();
        assert_eq!(json, "czNjcjN0");
    }
}
