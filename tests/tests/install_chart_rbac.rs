//! The chart's namespaced RBAC is enough and every rule of it is needed: the real
//! `oxbow-operator run`, as the chart's Deployment runs it with the chart's ServiceAccount
//! token, reconciles StreamJobs with every rule; with each verb of each rule removed in turn,
//! it names the forbidden call in its log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{future::ready, path::PathBuf, time::Duration};

use futures_util::StreamExt;

use kube::{Api, Client, api::PostParams};
use oxbow_crds::StreamJob;
use oxbow_tests::{
    Wait,
    chart::{
        apply, container_env, jobs_for, kubeconfig_with_token, reconciled, render,
        service_account_token, watch,
    },
    kafka, kube_env,
    operator::OperatorProcess,
    yaml::{documents, kind_of, name_of, of_kind, one_of_kind},
};
use serde_json::{Value, json};

/// Where an operator writes its log in a test.
fn log_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{name}.log"))
}

/// Calls the operator makes that a test without a kubelet cannot provoke: they serve running
/// workers (savepoint requests read a worker pod's address; a roll-out deletes the pods of
/// the previous generation). The operator lifecycle tests exercise them.
const NOT_PROVOKED_HERE: &[(&str, &str)] = &[("pods", "get"), ("pods", "delete")];

/// One run of the operator with the chart's namespaced RBAC, less `removed`.
#[derive(Clone, Debug)]
struct Case {
    /// What the run lacks, or `None` for all the chart grants.
    removed: Option<Removed>,
}

/// One verb of one rule, taken out of a Role.
#[derive(Clone, Debug)]
struct Removed {
    role: String,
    rule: usize,
    group: String,
    resource: String,
    verb: String,
}

impl Removed {
    /// The operator's log level: the chart's default, except where the operator reports the
    /// failure only at debug level (a failed Event publication).
    fn log_level(&self) -> &'static str {
        if self.resource == "events" {
            "info\\,oxbow_operator=debug"
        } else {
            "info"
        }
    }

    /// Whether a line of the operator's log names this forbidden call.
    fn reported_by(&self, line: &str) -> bool {
        let Removed {
            group,
            resource,
            verb,
            ..
        } = self;
        let qualified = if group.is_empty() {
            resource.clone()
        } else {
            format!("{resource}.{group}")
        };
        match (resource.as_str(), verb.as_str()) {
            // The OwnerReferencesPermissionEnforcement admission plugin's words.
            ("streamjobs/finalizers", "update") => line.contains(
                "cannot set blockOwnerDeletion if an ownerReference refers to a resource you can't set finalizers on",
            ),
            // A server-side apply that would create the object: the API server refuses it
            // without naming the verb; the operator names the object it applied.
            (_, "create") if line.contains("failed to apply") => {
                line.contains(&format!("{qualified} \"")) && line.contains("is forbidden")
            }
            _ => line.contains(&format!("cannot {verb} resource \"{resource}\"")),
        }
    }
}

async fn run_case(
    case: Case,
    client: Client,
    bootstrap: String,
    topic: String,
) -> Result<(), String> {
    let ns = kube_env::test_namespace(&client, "rbac")
        .await
        .map_err(|e| format!("{e:#}"))?;
    let level = format!(
        "log.level={}",
        case.removed.as_ref().map_or("info", Removed::log_level)
    );
    let mut docs = documents(&render("oxbow", &ns, &[&watch(&[&ns]), &level]).unwrap());
    if let Some(removed) = &case.removed {
        let doc = docs
            .iter_mut()
            .find(|d| kind_of(d) == "Role" && name_of(d) == removed.role)
            .unwrap();
        let rules = doc["rules"].as_array_mut().unwrap();
        assert_eq!(rules[removed.rule]["resources"], json!([removed.resource]));
        let verbs = rules[removed.rule]["verbs"].as_array_mut().unwrap();
        verbs.retain(|v| v != removed.verb.as_str());
        if verbs.is_empty() {
            rules.remove(removed.rule);
        }
    }
    let rbac: Vec<&Value> = docs
        .iter()
        .filter(|d| ["ServiceAccount", "Role", "RoleBinding"].contains(&kind_of(d)))
        .collect();
    apply(&rbac).map_err(|e| format!("{e:#}"))?;
    let deployment = one_of_kind(&docs, "Deployment");
    let account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap();
    let token = service_account_token(&client, &ns, account)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let config = std::env::temp_dir().join(format!("{ns}.kubeconfig"));
    kubeconfig_with_token(&token, &config).map_err(|e| format!("{e:#}"))?;
    let jobs: Api<StreamJob> = Api::namespaced(client.clone(), &ns);
    for job in jobs_for(&bootstrap, &topic).map_err(|e| format!("{e:#}"))? {
        jobs.create(&PostParams::default(), &job)
            .await
            .map_err(|e| e.to_string())?;
    }
    let pod_name = format!("{}-5f6d7-abcde", name_of(deployment));
    let lease = container_env(deployment)["OXBOW_LEASE_NAME"]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let log = log_path(&ns);
    let operator = OperatorProcess::start_as_deployed(deployment, &ns, &pod_name, &config, &log)
        .map_err(|e| format!("{e:#}"))?;
    let show_log = async || format!("operator log:\n{}", operator.log());
    let result = match &case.removed {
        None => Wait::new("every StreamJob reconciled", Duration::from_secs(60))
            .diagnose(show_log)
            .until(async || reconciled(&client, &ns, &lease, &pod_name).await)
            .await
            .map_err(|e| format!("with every rule: {e:#}")),
        Some(removed) => Wait::new(
            "the log to name the forbidden call",
            Duration::from_secs(45),
        )
        .diagnose(show_log)
        .until(async || {
            let log = operator.log();
            log.lines().any(|l| removed.reported_by(l)).then_some(())
        })
        .await
        .map_err(|e| {
            format!(
                "{} {} removed from Role {}: {e:#}",
                removed.verb, removed.resource, removed.role
            )
        }),
    };
    drop(operator);
    std::fs::remove_file(&config).ok();
    if result.is_ok() {
        std::fs::remove_file(&log).ok();
    }
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_rbac_is_enough_and_every_rule_is_needed() {
    let client = kube_env::client().await.unwrap();
    kube_env::install_crd(&client).await.unwrap();
    let bootstrap = kafka::bootstrap();
    let topic = kafka::new_topic(&bootstrap, "clicks", 2).await.unwrap();
    // PodDisruptionBudgets are policy/v1 from Kubernetes 1.21; the operator uses none before.
    let pdb_served = client
        .list_api_group_resources("policy/v1")
        .await
        .is_ok_and(|r| r.resources.iter().any(|r| r.name == "poddisruptionbudgets"));

    let docs = documents(&render("oxbow", "rbac", &[&watch(&["rbac"])]).unwrap());
    let mut cases = vec![Case { removed: None }];
    let mut not_provoked = Vec::new();
    for role in of_kind(&docs, "Role") {
        for (index, rule) in role["rules"].as_array().unwrap().iter().enumerate() {
            let resources = rule["resources"].as_array().unwrap();
            assert_eq!(resources.len(), 1, "one resource per rule: {rule}");
            let resource = resources[0].as_str().unwrap();
            assert_ne!(resource, "*", "no wildcards");
            for verb in rule["verbs"].as_array().unwrap() {
                let verb = verb.as_str().unwrap();
                assert_ne!(verb, "*", "no wildcards");
                if NOT_PROVOKED_HERE.contains(&(resource, verb))
                    || (resource == "poddisruptionbudgets" && !pdb_served)
                {
                    not_provoked.push(format!("{verb} {resource}"));
                    continue;
                }
                cases.push(Case {
                    removed: Some(Removed {
                        role: name_of(role).to_owned(),
                        rule: index,
                        group: rule["apiGroups"][0].as_str().unwrap().to_owned(),
                        resource: resource.to_owned(),
                        verb: verb.to_owned(),
                    }),
                });
            }
        }
    }
    eprintln!(
        "{} RBAC cases; not provoked without a kubelet{}: {}",
        cases.len(),
        if pdb_served { "" } else { " or policy/v1" },
        not_provoked.join(", ")
    );
    // Eight cases at a time, as futures of this task: the waits in a case borrow its state,
    // which the compiler cannot prove Send for a spawned task.
    let runs = cases.into_iter().map(|case| {
        let (client, bootstrap, topic) = (client.clone(), bootstrap.clone(), topic.clone());
        run_case(case, client, bootstrap, topic)
    });
    let failures: Vec<String> = futures_util::stream::iter(runs)
        .buffer_unordered(8)
        .filter_map(|r| ready(r.err()))
        .collect()
        .await;
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
