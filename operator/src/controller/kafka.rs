//! The operator's Kafka clients (partition discovery, offsets and lag, fencing, the shuffle
//! topic) all start from [`client_config`]: the settings the workers use,
//! [`oxbow_crds::kafka::client_properties`], with the credentials of the same Secret the
//! workers mount, read here through the Kubernetes API.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use oxbow_crds::{
    kafka::{Credentials, MissingCredential, Tls, client_properties, secret_keys},
    streamjob::{KafkaSecurity, KafkaSpec},
};
use rdkafka::ClientConfig;

/// Why a Kafka client could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The Secret named by `spec.kafka.security.secretRef` could not be read.
    #[error("failed to read the Kafka Secret {name:?}: {source}")]
    ReadSecret {
        /// `secretRef.name`.
        name: String,
        #[source]
        source: kube::Error,
    },
    /// The Secret does not exist.
    #[error("failed to find the Kafka Secret {name:?} (spec.kafka.security.secretRef)")]
    NoSecret {
        /// `secretRef.name`.
        name: String,
    },
    /// The Secret lacks a key the SASL mechanism needs.
    #[error(transparent)]
    Credential(#[from] MissingCredential),
}

/// The settings every Kafka client of the job in `namespace` starts from; each client adds
/// its role's properties (`group.id`, `transactional.id`) to them.
pub async fn client_config(
    client: &kube::Client,
    namespace: &str,
    kafka: &KafkaSpec,
) -> Result<ClientConfig, SettingsError> {
    let credentials = match &kafka.security {
        Some(security) => credentials(client, namespace, security).await?,
        None => Credentials::default(),
    };
    let mut config = ClientConfig::new();
    for (key, value) in client_properties(kafka, &credentials, None)? {
        config.set(key, value);
    }
    Ok(config)
}

/// The keys of the Secret `security` names; none without one. A key that is not UTF-8 counts
/// as absent.
async fn credentials(
    client: &kube::Client,
    namespace: &str,
    security: &KafkaSecurity,
) -> Result<Credentials, SettingsError> {
    let Some(name) = security.secret_ref.as_ref().map(|s| s.name.clone()) else {
        return Ok(Credentials::default());
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = match secrets.get_opt(&name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => return Err(SettingsError::NoSecret { name }),
        Err(source) => return Err(SettingsError::ReadSecret { name, source }),
    };
    let data = secret.data.unwrap_or_default();
    let text = |key: &str| {
        data.get(key)
            .and_then(|bytes| String::from_utf8(bytes.0.clone()).ok())
    };
    Ok(Credentials {
        username: text(secret_keys::USERNAME),
        password: text(secret_keys::PASSWORD),
        ca: text(secret_keys::CA).map(Tls::Pem),
        certificate: text(secret_keys::CERTIFICATE).map(Tls::Pem),
        key: text(secret_keys::KEY).map(Tls::Pem),
    })
}
