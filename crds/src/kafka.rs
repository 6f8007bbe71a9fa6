//! The settings of every Kafka client Oxbow creates, in the operator and in the worker:
//! `spec.kafka.bootstrapServers`, then `spec.kafka.security` with the credentials of its
//! Secret, then the user's `spec.kafka.properties`, which therefore win.
//!
//! The Secret named by `spec.kafka.security.secretRef` holds the keys in [`secret_keys`]. The
//! worker finds it mounted at [`SECRET_DIR`] and hands the TLS files over by path; the operator
//! reads it through the Kubernetes API and hands them over as PEM text. Either way the caller
//! resolves the Secret into [`Credentials`], and [`client_properties`] turns the spec and the
//! credentials into librdkafka properties with no I/O.

use crate::streamjob::{KafkaSecurity, KafkaSpec, SaslMechanism, SecurityProtocol};

/// Where the worker container finds the Kafka Secret.
pub const SECRET_DIR: &str = "/etc/oxbow/kafka";

/// Keys of the Kafka Secret.
pub mod secret_keys {
    /// SASL username.
    pub const USERNAME: &str = "username";
    /// SASL password.
    pub const PASSWORD: &str = "password";
    /// CA certificate(s) that verify the brokers, PEM.
    pub const CA: &str = "ca.crt";
    /// Client certificate for mutual TLS, PEM.
    pub const CERTIFICATE: &str = "tls.crt";
    /// Private key of the client certificate, PEM.
    pub const KEY: &str = "tls.key";
}

/// How a TLS item of the Secret reaches librdkafka.
#[derive(Clone, PartialEq, Eq)]
pub enum Tls {
    /// A file holding it (`ssl.*.location`): the Secret is mounted.
    Location(String),
    /// The PEM text itself (`ssl.*.pem`): the Secret was read through the API.
    Pem(String),
}

/// What the Kafka Secret holds, resolved by the caller. A key the Secret lacks is `None`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// [`secret_keys::USERNAME`], trailing line breaks allowed.
    pub username: Option<String>,
    /// [`secret_keys::PASSWORD`], trailing line breaks allowed.
    pub password: Option<String>,
    /// [`secret_keys::CA`].
    pub ca: Option<Tls>,
    /// [`secret_keys::CERTIFICATE`].
    pub certificate: Option<Tls>,
    /// [`secret_keys::KEY`].
    pub key: Option<Tls>,
}

// Written out so that a logged `Credentials` shows which keys were found, never a secret.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let found = |present: bool| if present { "<set>" } else { "<none>" };
        f.debug_struct("Credentials")
            .field("username", &found(self.username.is_some()))
            .field("password", &found(self.password.is_some()))
            .field("ca", &found(self.ca.is_some()))
            .field("certificate", &found(self.certificate.is_some()))
            .field("key", &found(self.key.is_some()))
            .finish()
    }
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tls::Location(path) => f.debug_tuple("Location").field(path).finish(),
            Tls::Pem(_) => f.write_str("Pem(..)"),
        }
    }
}

/// The SASL mechanism of the spec needs a credential the Secret does not have.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "failed to configure Kafka SASL authentication: the Secret {secret:?} (spec.kafka.security.secretRef) has no key {key:?}"
)]
pub struct MissingCredential {
    /// Name of the Secret, empty when `secretRef` is not set.
    pub secret: String,
    /// The key it lacks: [`secret_keys::USERNAME`] or [`secret_keys::PASSWORD`].
    pub key: &'static str,
}

/// librdkafka properties for a client of the job's Kafka cluster, in the order to set them:
/// `bootstrap.servers` (`bootstrap_override` in place of `kafka.bootstrap_servers` when given),
/// the security settings of [`security_properties`], then `kafka.properties`.
///
/// Each client adds its own role's properties (`group.id`, `transactional.id`, ...) after
/// these.
pub fn client_properties(
    kafka: &KafkaSpec,
    credentials: &Credentials,
    bootstrap_override: Option<&str>,
) -> Result<Vec<(String, String)>, MissingCredential> {
    let bootstrap = bootstrap_override.unwrap_or(&kafka.bootstrap_servers);
    let mut props = vec![("bootstrap.servers".to_owned(), bootstrap.to_owned())];
    if let Some(security) = &kafka.security {
        props.extend(security_properties(security, credentials)?);
    }
    props.extend(kafka.properties.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(props)
}

/// librdkafka properties for `security`: the protocol; with a SASL mechanism, the mechanism,
/// username and password (one trailing line break trimmed, as a Secret made from a file has
/// one); with a TLS protocol and a Secret, the TLS items `credentials` holds.
pub fn security_properties(
    security: &KafkaSecurity,
    credentials: &Credentials,
) -> Result<Vec<(String, String)>, MissingCredential> {
    let mut props = vec![(
        "security.protocol".to_owned(),
        protocol_name(security.protocol).to_owned(),
    )];
    let secret = security
        .secret_ref
        .as_ref()
        .map(|s| s.name.clone())
        .unwrap_or_default();
    if let Some(mechanism) = security.mechanism {
        props.push((
            "sasl.mechanism".to_owned(),
            mechanism_name(mechanism).to_owned(),
        ));
        for (key, value, property) in [
            (
                secret_keys::USERNAME,
                &credentials.username,
                "sasl.username",
            ),
            (
                secret_keys::PASSWORD,
                &credentials.password,
                "sasl.password",
            ),
        ] {
            let value = value.as_deref().ok_or_else(|| MissingCredential {
                secret: secret.clone(),
                key,
            })?;
            props.push((
                property.to_owned(),
                value.trim_end_matches(['\n', '\r']).to_owned(),
            ));
        }
    }
    let tls = matches!(
        security.protocol,
        SecurityProtocol::Ssl | SecurityProtocol::SaslSsl
    );
    if tls && security.secret_ref.is_some() {
        for (item, name) in [
            (&credentials.ca, "ca"),
            (&credentials.certificate, "certificate"),
            (&credentials.key, "key"),
        ] {
            match item {
                Some(Tls::Location(path)) => {
                    props.push((format!("ssl.{name}.location"), path.clone()));
                }
                Some(Tls::Pem(pem)) => props.push((format!("ssl.{name}.pem"), pem.clone())),
                None => {}
            }
        }
    }
    Ok(props)
}

/// librdkafka's `security.protocol` value.
fn protocol_name(protocol: SecurityProtocol) -> &'static str {
    match protocol {
        SecurityProtocol::Plaintext => "plaintext",
        SecurityProtocol::Ssl => "ssl",
        SecurityProtocol::SaslPlaintext => "sasl_plaintext",
        SecurityProtocol::SaslSsl => "sasl_ssl",
    }
}

/// librdkafka's `sasl.mechanism` value.
fn mechanism_name(mechanism: SaslMechanism) -> &'static str {
    match mechanism {
        SaslMechanism::Plain => "PLAIN",
        SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
        SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
    }
}

#[cfg(test)]
mod tests {

    use std::collections::BTreeMap;

    use super::*;
    use crate::streamjob::SecretReference;

    fn security(protocol: SecurityProtocol, mechanism: Option<SaslMechanism>) -> KafkaSecurity {
        KafkaSecurity {
            protocol,
            mechanism,
            secret_ref: Some(SecretReference {
                name: "kafka-creds".into(),
            }),
        }
    }

    fn kafka(security: Option<KafkaSecurity>, properties: &[(&str, &str)]) -> KafkaSpec {
        KafkaSpec {
            bootstrap_servers: "kafka:9092".into(),
            security,
            properties: properties
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn get<'a>(props: &'a [(String, String)], key: &str) -> Option<&'a str> {
        props
            .iter()
            .rev()
            .find(|(p, _)| p == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn sasl_ssl_with_scram_uses_the_secret() {
        let credentials = Credentials {
            username: Some("oxbow\n".into()),
            password: Some("s3cret".into()),
            ca: Some(Tls::Location("/etc/oxbow/kafka/ca.crt".into())),
            ..Credentials::default()
        };
        let props = security_properties(
            &security(SecurityProtocol::SaslSsl, Some(SaslMechanism::ScramSha512)),
            &credentials,
        )
        .unwrap();
        assert_eq!(get(&props, "security.protocol"), Some("sasl_ssl"));
        assert_eq!(get(&props, "sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(
            get(&props, "sasl.username"),
            Some("oxbow"),
            "the trailing newline of a Secret file is trimmed"
        );
        assert_eq!(get(&props, "sasl.password"), Some("s3cret"));
        assert_eq!(
            get(&props, "ssl.ca.location"),
            Some("/etc/oxbow/kafka/ca.crt")
        );
        assert_eq!(
            get(&props, "ssl.key.location"),
            None,
            "absent keys are not configured"
        );
    }

    #[test]
    fn tls_items_read_through_the_api_are_passed_as_pem() {
        let credentials = Credentials {
            certificate: Some(Tls::Pem("CERT".into())),
            key: Some(Tls::Pem("KEY".into())),
            ..Credentials::default()
        };
        let props =
            security_properties(&security(SecurityProtocol::Ssl, None), &credentials).unwrap();
        assert_eq!(get(&props, "ssl.certificate.pem"), Some("CERT"));
        assert_eq!(get(&props, "ssl.key.pem"), Some("KEY"));
        assert_eq!(get(&props, "ssl.certificate.location"), None);
        assert_eq!(get(&props, "sasl.mechanism"), None);
    }

    #[test]
    fn tls_items_are_ignored_without_a_tls_protocol() {
        let credentials = Credentials {
            username: Some("oxbow".into()),
            password: Some("s3cret".into()),
            ca: Some(Tls::Pem("CA".into())),
            ..Credentials::default()
        };
        let props = security_properties(
            &security(SecurityProtocol::SaslPlaintext, Some(SaslMechanism::Plain)),
            &credentials,
        )
        .unwrap();
        assert_eq!(get(&props, "security.protocol"), Some("sasl_plaintext"));
        assert_eq!(get(&props, "sasl.mechanism"), Some("PLAIN"));
        assert_eq!(get(&props, "ssl.ca.pem"), None);
    }

    #[test]
    fn a_missing_credential_names_the_secret_and_key() {
        let credentials = Credentials {
            username: Some("oxbow".into()),
            ..Credentials::default()
        };
        let err = security_properties(
            &security(SecurityProtocol::SaslPlaintext, Some(SaslMechanism::Plain)),
            &credentials,
        )
        .unwrap_err();
        assert_eq!(
            err,
            MissingCredential {
                secret: "kafka-creds".into(),
                key: "password"
            }
        );
        let message = err.to_string();
        assert!(
            message.contains("\"password\"") && message.contains("kafka-creds"),
            "{message}"
        );
    }

    #[test]
    fn bootstrap_first_user_properties_last() {
        let spec = kafka(
            Some(security(SecurityProtocol::Ssl, None)),
            &[("security.protocol", "plaintext"), ("linger.ms", "5")],
        );
        let props = client_properties(&spec, &Credentials::default(), None).unwrap();
        assert_eq!(
            props,
            [
                ("bootstrap.servers", "kafka:9092"),
                ("security.protocol", "ssl"),
                ("linger.ms", "5"),
                ("security.protocol", "plaintext"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert_eq!(
            get(&props, "security.protocol"),
            Some("plaintext"),
            "a user property set last wins"
        );
    }

    #[test]
    fn the_bootstrap_override_replaces_the_spec_s_servers() {
        let props = client_properties(
            &kafka(None, &[]),
            &Credentials::default(),
            Some("localhost:19092"),
        )
        .unwrap();
        assert_eq!(
            props,
            [("bootstrap.servers".to_owned(), "localhost:19092".to_owned())]
        );
    }

    #[test]
    fn credentials_never_show_in_debug_output() {
        let credentials = Credentials {
            username: Some("oxbow".into()),
            password: Some("s3cret".into()),
            key: Some(Tls::Pem("PRIVATE KEY".into())),
            ..Credentials::default()
        };
        let debug = format!("{credentials:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("PRIVATE") && !debug.contains("oxbow"),
            "{debug}"
        );
    }
}
