//! The headless Service `<job>`: a stable DNS name per worker
//! (`<job>-<ordinal>.<job>.<namespace>.svc`), through which the operator calls the admin API.

use k8s_openapi::{
    api::core::v1::{Service, ServicePort, ServiceSpec},
    apimachinery::pkg::util::intstr::IntOrString,
};
use oxbow_crds::{StreamJob, admin::ADMIN_PORT};

use super::{BuildError, meta, meta::Owner, names, statefulset::ADMIN_PORT_NAME};

/// The headless Service of `job`'s workers.
///
/// `publishNotReadyAddresses`: a worker is not ready while it restores or after a
/// stop-with-savepoint, and that is exactly when the operator must reach it.
pub fn service(job: &StreamJob) -> Result<Service, BuildError> {
    let owner = Owner::of(job)?;
    Ok(Service {
        metadata: owner.object_meta(names::service(&owner.name)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            selector: Some(meta::selector_labels(&owner.name)),
            publish_not_ready_addresses: Some(true),
            ports: Some(vec![ServicePort {
                name: Some(ADMIN_PORT_NAME.to_owned()),
                port: i32::from(ADMIN_PORT),
                target_port: Some(IntOrString::String(ADMIN_PORT_NAME.to_owned())),
                protocol: Some("TCP".to_owned()),
                app_protocol: Some("http".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::{
        fixtures::{defaults, job_file, stream_job},
        statefulset::stateful_set,
    };

    #[test]
    fn the_service_is_headless_and_reaches_workers_that_are_not_ready() {
        let svc = service(&stream_job()).unwrap();
        assert_eq!(svc.metadata.name.as_deref(), Some("fraud"));
        let spec = svc.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        let port = &spec.ports.unwrap()[0];
        assert_eq!(port.port, 9249);
        assert_eq!(port.target_port, Some(IntOrString::String("admin".into())));
    }

    #[test]
    fn the_service_selects_the_statefulsets_pods_and_is_its_governing_service() {
        let svc = service(&stream_job()).unwrap();
        let sts = stateful_set(&stream_job(), &job_file(), &defaults()).unwrap();
        let sts_spec = sts.spec.unwrap();
        assert_eq!(sts_spec.service_name, svc.metadata.name);
        let pod_labels = sts_spec.template.metadata.unwrap().labels.unwrap();
        for (k, v) in svc.spec.unwrap().selector.unwrap() {
            assert_eq!(pod_labels.get(&k), Some(&v), "{k}");
        }
        let ports = sts_spec.template.spec.unwrap().containers[0]
            .ports
            .clone()
            .unwrap();
        assert!(ports.iter().any(|p| p.name.as_deref() == Some("admin")));
    }
}
