//! `helm install` against the real control plane, then the real `oxbow-operator run` process,
//! authenticated with the chart's ServiceAccount token and configured with the chart's
//! environment (no kubelet runs the Deployment here), reconciles StreamJobs; the ClusterRole
//! grants every rule; `helm upgrade` rolls the pod template; `helm uninstall` removes it all
//! but the CRD.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use kube::{Api, api::PostParams};
use oxbow_crds::StreamJob;
use oxbow_tests::{
    Wait,
    chart::{jobs_for, kubeconfig_with_token, reconciled, service_account_token},
    eventually, kafka, kube_env,
    operator::OperatorProcess,
    scratch_dir,
    tools::{helm_in_cluster, kubectl, run},
    unique_name,
    yaml::{documents, name_of, one_of_kind},
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_reconciles_with_the_charts_rbac_and_uninstall_removes_it() {
    let (client, ns) = kube_env::with_crd("oxbow-helm").await.unwrap();
    let bootstrap = kafka::bootstrap();
    let topic = kafka::new_topic(&bootstrap, "clicks", 2).await.unwrap();
    let release = unique_name("rel");

    // The CRD is already there (as after a first install): Helm leaves it alone.
    let out = run(
        helm_in_cluster().args(["install", &release, "charts/oxbow", "--namespace", &ns]),
        None,
    )
    .unwrap();
    assert!(out.contains("STATUS: deployed"), "{out}");
    let manifest = run(
        helm_in_cluster().args(["get", "manifest", &release, "--namespace", &ns]),
        None,
    )
    .unwrap();
    let docs = documents(&manifest);
    let deployment = one_of_kind(&docs, "Deployment");
    let operator = name_of(deployment).to_owned();
    let cluster_role = name_of(one_of_kind(&docs, "ClusterRole")).to_owned();
    let account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap()
        .to_owned();

    // The ClusterRole grants every rule in every namespace.
    let subject = format!("system:serviceaccount:{ns}:{account}");
    for rule in one_of_kind(&docs, "ClusterRole")["rules"]
        .as_array()
        .unwrap()
    {
        let group = rule["apiGroups"][0].as_str().unwrap();
        for resource in rule["resources"].as_array().unwrap() {
            let resource = resource.as_str().unwrap();
            let (resource, sub) = resource
                .split_once('/')
                .map_or((resource, None), |(r, s)| (r, Some(s)));
            let qualified = if group.is_empty() {
                resource.to_owned()
            } else {
                format!("{resource}.{group}")
            };
            for verb in rule["verbs"].as_array().unwrap() {
                let mut command = kubectl();
                command.args([
                    "auth",
                    "can-i",
                    verb.as_str().unwrap(),
                    &qualified,
                    "--all-namespaces",
                    "--as",
                    &subject,
                ]);
                if let Some(sub) = sub {
                    command.args(["--subresource", sub]);
                }
                let answer = run(&mut command, None).unwrap();
                assert_eq!(
                    answer.trim(),
                    "yes",
                    "{verb} {qualified} {sub:?} for {subject}"
                );
            }
        }
    }

    // The installed operator, as its pod would run it — but limited to this test's namespace,
    // since other tests' StreamJobs share this control plane.
    let token = service_account_token(&client, &ns, &account).await.unwrap();
    let dir = scratch_dir("oxbow-helm");
    let config = dir.join("kubeconfig");
    kubeconfig_with_token(&token, &config).unwrap();
    let mut deployment = deployment.clone();
    for var in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array_mut()
        .unwrap()
    {
        if var["name"] == "WATCH_NAMESPACE" {
            assert_eq!(var["value"], "", "cluster-wide by default");
            var["value"] = json!(ns);
        }
    }
    let pod_name = format!("{operator}-7d4b9c-x2x9q");
    let process = OperatorProcess::start_as_deployed(
        &deployment,
        &ns,
        &pod_name,
        &config,
        &dir.join("operator.log"),
    )
    .unwrap();
    let jobs: Api<StreamJob> = Api::namespaced(client.clone(), &ns);
    for job in jobs_for(&bootstrap, &topic).unwrap() {
        jobs.create(&PostParams::default(), &job).await.unwrap();
    }
    let lease = operator.clone();
    Wait::new("the StreamJobs reconciled", Duration::from_secs(60))
        .diagnose(async || format!("operator log:\n{}", process.log()))
        .until(async || reconciled(&client, &ns, &lease, &pod_name).await)
        .await
        .unwrap();
    drop(process);

    // An upgrade with a changed value rolls the Deployment's pod template.
    let out = run(
        helm_in_cluster()
            .args([
                "upgrade",
                &release,
                "charts/oxbow",
                "--namespace",
                &ns,
                "--reuse-values",
            ])
            .args(["--set", "log.level=debug"]),
        None,
    )
    .unwrap();
    assert!(out.contains("REVISION: 2"), "{out}");
    let env = run(
        kubectl().args([
            "get",
            "deployment",
            &operator,
            "-n",
            &ns,
            "-o",
            "jsonpath={.spec.template.spec.containers[0].env[?(@.name==\"OXBOW_LOG\")].value}",
        ]),
        None,
    )
    .unwrap();
    assert_eq!(env, "debug");

    run(
        helm_in_cluster().args(["uninstall", &release, "--namespace", &ns]),
        None,
    )
    .unwrap();
    for (kind, namespace, name) in [
        ("deployment", Some(ns.as_str()), operator.as_str()),
        ("serviceaccount", Some(ns.as_str()), account.as_str()),
        (
            "role",
            Some(ns.as_str()),
            &format!("{operator}-leader-election"),
        ),
        ("clusterrole", None, cluster_role.as_str()),
        ("clusterrolebinding", None, cluster_role.as_str()),
        (
            "networkpolicy",
            Some(ns.as_str()),
            &format!("{release}-oxbow-workers"),
        ),
    ] {
        let mut command = kubectl();
        command.args(["get", kind, name, "--ignore-not-found", "-o", "name"]);
        if let Some(namespace) = namespace {
            command.args(["-n", namespace]);
        }
        eventually(
            &format!("{kind} {name} to go"),
            Duration::from_secs(30),
            async || -> anyhow::Result<Option<()>> {
                Ok(run(&mut command, None)?.trim().is_empty().then_some(()))
            },
        )
        .await
        .unwrap();
    }
    // Helm never deletes a CRD (that would delete every StreamJob): it stays.
    let crd = run(
        kubectl().args(["get", "crd", "streamjobs.oxbow.dev", "-o", "name"]),
        None,
    )
    .unwrap();
    assert_eq!(
        crd.trim(),
        "customresourcedefinition.apiextensions.k8s.io/streamjobs.oxbow.dev"
    );
    std::fs::remove_dir_all(&dir).ok();
}
