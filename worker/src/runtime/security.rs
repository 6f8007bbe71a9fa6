//! Kafka security settings: the Secret of `spec.kafka.security`, mounted by the operator at
//! [`KAFKA_SECRET_DIR`], read into [`Credentials`] for [`oxbow_crds::kafka`], which turns them
//! into librdkafka properties.

use std::path::{Path, PathBuf};

use oxbow_crds::{
    kafka::{self, Credentials, Tls, secret_keys},
    streamjob::{KafkaSecurity, KafkaSpec},
};

/// Where the worker container finds the Kafka Secret (`OXBOW_KAFKA_SECRET_DIR` overrides).
pub const KAFKA_SECRET_DIR: &str = kafka::SECRET_DIR;

/// A Kafka credential the spec asks for is missing.
#[derive(Debug, thiserror::Error)]
#[error(
    "failed to read the Kafka credential {key:?} from {dir} (Secret {secret:?}, key {key:?}): {source}"
)]
pub struct MissingCredential {
    /// Secret name.
    pub secret: String,
    /// Secret key.
    pub key: &'static str,
    /// Mount directory.
    pub dir: String,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// The secret's mount directory.
pub fn secret_dir() -> PathBuf {
    std::env::var_os("OXBOW_KAFKA_SECRET_DIR")
        .map_or_else(|| PathBuf::from(KAFKA_SECRET_DIR), PathBuf::from)
}

/// The properties every Kafka client of the worker starts from ([`kafka::client_properties`]):
/// bootstrap servers (`bootstrap` overrides the spec's), security with the credentials mounted
/// at `dir`, then the user's `properties`.
pub fn client_properties(
    spec: &KafkaSpec,
    bootstrap: Option<&str>,
    dir: &Path,
) -> Result<Vec<(String, String)>, MissingCredential> {
    let credentials = match &spec.security {
        Some(security) => credentials(security, dir)?,
        None => Credentials::default(),
    };
    kafka::client_properties(spec, &credentials, bootstrap).map_err(|e| MissingCredential {
        secret: e.secret.clone(),
        key: e.key,
        dir: dir.display().to_string(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, e),
    })
}

/// The credentials mounted at `dir`: username and password when `security` names a SASL
/// mechanism (an unreadable one is an error), and the TLS files that exist, by path.
pub fn credentials(security: &KafkaSecurity, dir: &Path) -> Result<Credentials, MissingCredential> {
    let mut credentials = Credentials::default();
    if security.mechanism.is_some() {
        let read = |key: &'static str| {
            std::fs::read_to_string(dir.join(key)).map_err(|source| MissingCredential {
                secret: security
                    .secret_ref
                    .as_ref()
                    .map(|s| s.name.clone())
                    .unwrap_or_default(),
                key,
                dir: dir.display().to_string(),
                source,
            })
        };
        credentials.username = Some(read(secret_keys::USERNAME)?);
        credentials.password = Some(read(secret_keys::PASSWORD)?);
    }
    let file = |key: &str| {
        let path = dir.join(key);
        path.exists()
            .then(|| Tls::Location(path.display().to_string()))
    };
    credentials.ca = file(secret_keys::CA);
    credentials.certificate = file(secret_keys::CERTIFICATE);
    credentials.key = file(secret_keys::KEY);
    Ok(credentials)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `spec.kafka` with `security` as a manifest writes it.
    fn security(protocol: &str, mechanism: &str) -> KafkaSpec {
        let spec = serde_json::json!({
            "bootstrapServers": "kafka:9092",
            "security": {
                "protocol": protocol, "mechanism": mechanism, "secretRef": {"name": "kafka-creds"}
            }
        });
        serde_json::from_value(spec).unwrap()
    }

    fn dir_with(files: &[(&str, &str)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "oxbow-kafka-secret-{}-{}",
            std::process::id(),
            files.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        for (k, v) in files {
            std::fs::write(dir.join(k), v).unwrap();
        }
        dir
    }

    #[test]
    fn the_mounted_secret_is_read_and_tls_files_passed_by_path() {
        let dir = dir_with(&[
            ("username", "oxbow\n"),
            ("password", "s3cret"),
            ("ca.crt", "PEM"),
        ]);
        let props = client_properties(&security("SASL_SSL", "SCRAM-SHA-512"), None, &dir).unwrap();
        let get = |k: &str| props.iter().find(|(p, _)| p == k).map(|(_, v)| v.as_str());
        assert_eq!(get("sasl.username"), Some("oxbow"));
        assert_eq!(get("sasl.password"), Some("s3cret"));
        assert_eq!(
            get("ssl.ca.location"),
            Some(dir.join("ca.crt").to_str().unwrap())
        );
        assert_eq!(
            get("ssl.key.location"),
            None,
            "absent files are not configured"
        );
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_missing_credential_names_the_secret_and_key() {
        let dir = dir_with(&[("username", "oxbow")]);
        let err = client_properties(&security("SASL_PLAINTEXT", "PLAIN"), None, &dir).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("\"password\"") && message.contains("kafka-creds"),
            "{message}"
        );
        std::fs::remove_dir_all(dir).ok();
    }
}
