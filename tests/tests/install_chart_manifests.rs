//! The chart and the plain manifests against the real control plane: the chart rendered in
//! both RBAC modes, `manifests/install.yaml`, its kustomization and the examples, all accepted
//! by `kubectl apply --dry-run=server`; what the chart renders for the operator's Deployment,
//! its Service, the workers' ServiceAccounts and NetworkPolicies and the optional monitors, held
//! against the operator's own worker StatefulSet.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
};

use oxbow_tests::{
    chart::{apply_dry_run, assert_every_object_accepted, render, watch, worker_stateful_set},
    kube_env, repo_root,
    tools::{kubectl, run},
    yaml::{
        documents, kind_of, labels_match, name_of, named, namespace_of, namespaces_of,
        numbers_as_floats, of_kind, one_of_kind, value_labels,
    },
};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendered_chart_applies_server_side_in_both_rbac_modes() {
    let client = kube_env::client().await.unwrap();
    let mut namespaces = Vec::new();
    for prefix in ["oxbow-sys", "team-a", "team-b"] {
        namespaces.push(kube_env::test_namespace(&client, prefix).await.unwrap());
    }
    let [release_ns, team_a, team_b] = <[String; 3]>::try_from(namespaces).unwrap();
    let statefulset = worker_stateful_set().unwrap();
    let worker_pod = statefulset.spec.as_ref().unwrap().template.clone();
    let worker_labels = worker_pod
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    let worker_container = &worker_pod.spec.as_ref().unwrap().containers[0];

    // Every namespace: a ClusterRole; a list: a Role in each, none cluster-wide.
    let cluster = documents(&render("oxbow", &release_ns, &[]).unwrap());
    let listed = documents(&render("oxbow", &release_ns, &[&watch(&[&team_a, &team_b])]).unwrap());
    for (docs, mode) in [(&cluster, "cluster-wide"), (&listed, "namespaced")] {
        let lines = apply_dry_run(docs).unwrap();
        assert_every_object_accepted(docs, &lines, mode);
        let roles: BTreeSet<(&str, &str)> = of_kind(docs, "Role")
            .into_iter()
            .map(|r| (namespace_of(r), name_of(r)))
            .collect();
        if mode == "cluster-wide" {
            assert_eq!(of_kind(docs, "ClusterRole").len(), 1);
            assert_eq!(of_kind(docs, "ClusterRoleBinding").len(), 1);
            assert_eq!(
                roles,
                BTreeSet::from([(release_ns.as_str(), "oxbow-operator-leader-election")]),
            );
        } else {
            assert!(of_kind(docs, "ClusterRole").is_empty(), "{mode}");
            assert!(of_kind(docs, "ClusterRoleBinding").is_empty(), "{mode}");
            assert_eq!(
                roles,
                BTreeSet::from([
                    (team_a.as_str(), "oxbow-operator"),
                    (team_b.as_str(), "oxbow-operator"),
                    (release_ns.as_str(), "oxbow-operator-leader-election"),
                ]),
            );
        }

        // The operator Deployment: two replicas with leader election, restricted.
        let deployment = one_of_kind(docs, "Deployment");
        let spec = &deployment["spec"];
        assert_eq!(spec["replicas"], 2);
        let pod = &spec["template"]["spec"];
        let pod_labels = value_labels(&spec["template"]["metadata"]["labels"]);
        assert!(labels_match(&spec["selector"], &pod_labels));
        let container = &pod["containers"][0];
        let env: BTreeMap<&str, &Value> = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap(), e))
            .collect();
        assert_eq!(env["OXBOW_LEADER_ELECTION"]["value"], "true");
        assert_eq!(env["OXBOW_LEASE_NAMESPACE"]["value"], release_ns.as_str());
        assert_eq!(
            env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.name"
        );
        let watched = if mode == "cluster-wide" {
            String::new()
        } else {
            format!("{team_a},{team_b}")
        };
        assert_eq!(env["WATCH_NAMESPACE"]["value"], watched.as_str());
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(pod["securityContext"]["runAsUser"], 65532);
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        let security = &container["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true);
        assert_eq!(security["allowPrivilegeEscalation"], false);
        assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
        assert!(container["resources"]["limits"]["memory"].is_string());
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(container["ports"][0]["name"], "metrics");
        let spread = &pod["topologySpreadConstraints"][0];
        assert_eq!(spread["topologyKey"], "kubernetes.io/hostname");
        assert!(labels_match(&spread["labelSelector"], &pod_labels));

        // The metrics Service reaches the operator pods' metrics port.
        let service = one_of_kind(docs, "Service");
        assert!(labels_match(
            &json!({"matchLabels": service["spec"]["selector"]}),
            &pod_labels
        ));
        assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics");

        // Each worker namespace: a ServiceAccount without API access, and a NetworkPolicy
        // letting only the operator's pods reach the port the operator names on its workers.
        let worker_namespaces: BTreeSet<&str> = if mode == "cluster-wide" {
            BTreeSet::from([release_ns.as_str()])
        } else {
            BTreeSet::from([team_a.as_str(), team_b.as_str()])
        };
        let worker_sas = named(docs, "ServiceAccount", "oxbow-worker");
        assert_eq!(namespaces_of(&worker_sas), worker_namespaces);
        for sa in &worker_sas {
            assert_eq!(sa["automountServiceAccountToken"], false);
        }
        let bound: Vec<&str> = of_kind(docs, "RoleBinding")
            .into_iter()
            .chain(of_kind(docs, "ClusterRoleBinding"))
            .flat_map(|b| b["subjects"].as_array().unwrap())
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert!(!bound.contains(&"oxbow-worker"), "{bound:?}");
        let policies = named(docs, "NetworkPolicy", "oxbow-workers");
        assert_eq!(namespaces_of(&policies), worker_namespaces);
        for policy in policies {
            let spec = &policy["spec"];
            assert!(labels_match(&spec["podSelector"], &worker_labels));
            assert_eq!(spec["policyTypes"], json!(["Ingress"]));
            let ingress = spec["ingress"].as_array().unwrap();
            assert_eq!(ingress.len(), 1);
            let port = ingress[0]["ports"][0]["port"].as_str().unwrap();
            let admin = worker_container
                .ports
                .as_ref()
                .unwrap()
                .iter()
                .find(|p| p.name.as_deref() == Some(port))
                .unwrap_or_else(|| panic!("the worker container has no port named {port}"));
            assert_eq!(admin.container_port, 9249);
            let from = ingress[0]["from"].as_array().unwrap();
            assert_eq!(from.len(), 1, "only the operator: {from:?}");
            assert!(labels_match(&from[0]["podSelector"], &pod_labels));
            assert_eq!(
                from[0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
                release_ns.as_str()
            );
        }
    }

    // The optional monitors select what they should (their CRDs are not on this server).
    let monitored = documents(
        &render(
            "oxbow",
            &release_ns,
            &[
                "metrics.serviceMonitor.enabled=true",
                "worker.podMonitor.enabled=true",
                &watch(&[&team_a]),
            ],
        )
        .unwrap(),
    );
    let service_monitor = one_of_kind(&monitored, "ServiceMonitor");
    assert_eq!(service_monitor["spec"]["endpoints"][0]["port"], "metrics");
    let pod_monitor = one_of_kind(&monitored, "PodMonitor");
    assert!(labels_match(
        &pod_monitor["spec"]["selector"],
        &worker_labels
    ));
    assert_eq!(
        pod_monitor["spec"]["podMetricsEndpoints"][0]["port"],
        "admin"
    );
    assert_eq!(
        pod_monitor["spec"]["namespaceSelector"]["matchNames"],
        json!([team_a])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plain_manifests_kustomization_and_examples_apply_server_side() {
    let client = kube_env::client().await.unwrap();
    let install =
        documents(&std::fs::read_to_string(repo_root().join("manifests/install.yaml")).unwrap());
    // Its Namespace comes first; a dry run does not create it, so the rest needs it made.
    let namespace = one_of_kind(&install, "Namespace");
    assert_eq!(name_of(&install[0]), name_of(namespace));
    kube_env::ensure_namespace(&client, name_of(namespace))
        .await
        .unwrap();
    let lines = apply_dry_run(&install).unwrap();
    assert_every_object_accepted(&install, &lines, "manifests/install.yaml");
    for kind in [
        "CustomResourceDefinition",
        "Deployment",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "NetworkPolicy",
    ] {
        assert!(
            !of_kind(&install, kind).is_empty(),
            "install.yaml has no {kind}"
        );
    }

    // What a GitOps tool builds from the kustomization is install.yaml.
    let built = documents(&run(kubectl().args(["kustomize", "manifests"]), None).unwrap());
    let key = |d: &Value| {
        (
            kind_of(d).to_owned(),
            namespace_of(d).to_owned(),
            name_of(d).to_owned(),
        )
    };
    // kustomize writes the CRD's `minimum: 1.0` as `1`: the same number.
    let by_key = |docs: &[Value]| -> BTreeMap<_, Value> {
        docs.iter()
            .map(|d| (key(d), numbers_as_floats(d)))
            .collect()
    };
    let (built, expected) = (by_key(&built), by_key(&install));
    assert_eq!(
        built.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (key, object) in &expected {
        assert!(
            built[key] == *object,
            "kustomize changed {key:?}:\n{}\n---\n{}",
            serde_json::to_string(&built[key]).unwrap(),
            serde_json::to_string(object).unwrap()
        );
    }
    let lines = run(
        kubectl().args([
            "apply",
            "--dry-run=server",
            "--validate=false",
            "-k",
            "manifests",
        ]),
        None,
    )
    .unwrap();
    assert_eq!(
        lines
            .lines()
            .filter(|l| l.ends_with("(server dry run)"))
            .count(),
        install.len(),
        "{lines}"
    );

    // The examples, as a user applies them once the CRD is installed.
    kube_env::install_crd(&client).await.unwrap();
    let ns = kube_env::test_namespace(&client, "examples").await.unwrap();
    let mut examples: Vec<PathBuf> = std::fs::read_dir(repo_root().join("manifests/examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    examples.sort();
    assert!(examples.len() >= 2, "{examples:?}");
    for example in &examples {
        let out = run(
            kubectl()
                .args(["apply", "--dry-run=server", "-n", &ns, "-f"])
                .arg(example),
            None,
        )
        .unwrap();
        assert!(
            out.trim().starts_with("streamjob.oxbow.dev/")
                && out.trim().ends_with("(server dry run)"),
            "{}: {out}",
            example.display()
        );
        let job = oxbow_crds::parse_manifest(&std::fs::read_to_string(example).unwrap()).unwrap();
        let storage = &job.spec.checkpoint.as_ref().unwrap().storage;
        assert!(
            !storage.starts_with("file://"),
            "{}: a pod's file:// checkpoints die with the pod: {storage}",
            example.display()
        );
    }
}
