//! Kafka security settings: `spec.kafka.security` and the Secret it names, mounted by the
//! operator at [`KAFKA_SECRET_DIR`] (keys `username`, `password`, `ca.crt`, `tls.crt`,
//! `tls.key`), turned into librdkafka properties.

use std::path::{Path, PathBuf};

use oxbow_crds::streamjob::{KafkaSecurity, SaslMechanism, SecurityProtocol};

/// Where the worker container finds the Kafka Secret (`OXBOW_KAFKA_SECRET_DIR` overrides).
pub const KAFKA_SECRET_DIR: &str = "/etc/oxbow/kafka";

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

/// librdkafka properties for `security`, reading credentials from `dir`.
pub fn properties(
    security: &KafkaSecurity,
    dir: &Path,
) -> Result<Vec<(String, String)>, MissingCredential> {
    let mut props = Vec::new();
    let protocol = match security.protocol {
        SecurityProtocol::Plaintext => "plaintext",
        SecurityProtocol::Ssl => "ssl",
        SecurityProtocol::SaslPlaintext => "sasl_plaintext",
        SecurityProtocol::SaslSsl => "sasl_ssl",
    };
    props.push(("security.protocol".to_owned(), protocol.to_owned()));
    let secret = security
        .secret_ref
        .as_ref()
        .map(|s| s.name.clone())
        .unwrap_or_default();
    let missing = |key: &'static str, source| MissingCredential {
        secret: secret.clone(),
        key,
        dir: dir.display().to_string(),
        source,
    };
    if let Some(mechanism) = security.mechanism {
        let name = match mechanism {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        };
        props.push(("sasl.mechanism".to_owned(), name.to_owned()));
        for (key, property) in [("username", "sasl.username"), ("password", "sasl.password")] {
            let value = std::fs::read_to_string(dir.join(key)).map_err(|e| missing(key, e))?;
            props.push((
                property.to_owned(),
                value.trim_end_matches(['\n', '\r']).to_owned(),
            ));
        }
    }
    if matches!(
        security.protocol,
        SecurityProtocol::Ssl | SecurityProtocol::SaslSsl
    ) && security.secret_ref.is_some()
    {
        for (key, property) in [
            ("ca.crt", "ssl.ca.location"),
            ("tls.crt", "ssl.certificate.location"),
            ("tls.key", "ssl.key.location"),
        ] {
            let path = dir.join(key);
            if path.exists() {
                props.push((property.to_owned(), path.display().to_string()));
            }
        }
    }
    Ok(props)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxbow_crds::streamjob::SecretReference;

    fn security(protocol: SecurityProtocol, mechanism: Option<SaslMechanism>) -> KafkaSecurity {
        KafkaSecurity {
            protocol,
            mechanism,
            secret_ref: Some(SecretReference {
                name: "kafka-creds".into(),
            }),
        }
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
    fn sasl_ssl_with_scram_reads_the_secret() {
        let dir = dir_with(&[
            ("username", "oxbow\n"),
            ("password", "s3cret"),
            ("ca.crt", "PEM"),
        ]);
        let props = properties(
            &security(SecurityProtocol::SaslSsl, Some(SaslMechanism::ScramSha512)),
            &dir,
        )
        .unwrap();
        let get = |k: &str| props.iter().find(|(p, _)| p == k).map(|(_, v)| v.as_str());
        assert_eq!(get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(
            get("sasl.username"),
            Some("oxbow"),
            "the trailing newline of a Secret file is trimmed"
        );
        assert_eq!(get("sasl.password"), Some("s3cret"));
        assert_eq!(
            get("ssl.ca.location"),
            Some(dir.join("ca.crt").to_str().unwrap())
        );
        assert_eq!(
            get("ssl.key.location"),
            None,
            "absent keys are not configured"
        );
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_missing_credential_names_the_secret_and_key() {
        let dir = dir_with(&[("username", "oxbow")]);
        let err = properties(
            &security(SecurityProtocol::SaslPlaintext, Some(SaslMechanism::Plain)),
            &dir,
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("\"password\"") && message.contains("kafka-creds"),
            "{message}"
        );
        std::fs::remove_dir_all(dir).ok();
    }
}
