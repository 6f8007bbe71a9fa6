//! The real `oxbow-operator run` binary as processes against the real control plane: two
//! replicas elect one leader through a Lease, the standby serves health and readiness but does
//! not act, and takes over when the leader is killed or terminated; `/metrics` counts the
//! reconciles and the jobs by phase; a bad setting stops the process with a message naming it.
//!
//! No kubelet runs here, so worker pods stay Pending: a job that is reconciled has its
//! StatefulSet and ConfigMap and a phase in its status.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::ConfigMap};
use kube::{Api, Client, api::PostParams};
use oxbow_crds::{StreamJob, streamjob::Phase};
use oxbow_operator::children::names;
use oxbow_tests::{
    eventually, kafka, kube_env, manifest,
    operator::{self, OperatorProcess, Replica},
    unique_name,
};

/// The operator's Lease duration: a standby may take over this long after the leader's last
/// renewal.
const LEASE: Duration = Duration::from_secs(15);

/// A namespace with the CRD and a source topic, and a Lease name of its own.
struct Setup {
    client: Client,
    namespace: String,
    bootstrap: String,
    topic: String,
    lease: String,
}

impl Setup {
    async fn start(prefix: &str) -> Setup {
        let (client, namespace) = kube_env::with_crd(prefix).await.unwrap();
        let bootstrap = kafka::bootstrap();
        let topic = kafka::new_topic(&bootstrap, "op-src", 2).await.unwrap();
        Setup {
            client,
            namespace,
            bootstrap,
            topic,
            lease: unique_name("oxbow-operator"),
        }
    }

    fn replica(&self, pod_name: &str) -> OperatorProcess {
        let replica = Replica {
            namespace: self.namespace.clone(),
            pod_name: pod_name.to_owned(),
            lease_name: self.lease.clone(),
        };
        OperatorProcess::start(&operator::binary(), &replica).unwrap()
    }

    async fn holder(&self) -> Option<String> {
        operator::lease_holder(&self.client, &self.namespace, &self.lease)
            .await
            .unwrap()
    }

    /// Replicas `op-a` and `op-b`, once exactly one says it leads and the Lease names it;
    /// and which one that is.
    async fn two_replicas(&self) -> ([OperatorProcess; 2], usize) {
        let replicas = [self.replica("op-a"), self.replica("op-b")];
        let leader = sole_leader(&[&replicas[0], &replicas[1]], Duration::from_secs(30)).await;
        assert_eq!(
            self.holder().await.as_deref(),
            Some(replicas[leader].name.as_str()),
            "the Lease names the replica whose metrics say it leads"
        );
        (replicas, leader)
    }

    /// Waits until `standby` says it leads and the Lease names it, at most a lease duration
    /// and some slack; the time that took since `since`.
    async fn taken_over_by(&self, standby: &OperatorProcess, since: Instant) -> Duration {
        eventually(
            &format!("{} to take over", standby.name),
            LEASE + Duration::from_secs(10),
            async || {
                let leads = standby.is_leader().await?;
                let holder = operator::lease_holder(&self.client, &self.namespace, &self.lease)
                    .await
                    .ok()?;
                (leads && holder.as_deref() == Some(standby.name.as_str())).then_some(())
            },
        )
        .await
        .unwrap();
        since.elapsed()
    }

    /// Creates job `name`, and waits until the operator has applied its StatefulSet and
    /// ConfigMap and set its phase; returns the phase.
    async fn reconciled(&self, name: &str, timeout: Duration) -> Phase {
        let jobs: Api<StreamJob> = Api::namespaced(self.client.clone(), &self.namespace);
        let job = manifest::filter_job(name, &self.bootstrap, &self.topic, "amount > 0")
            .stream_job()
            .unwrap();
        jobs.create(&PostParams::default(), &job).await.unwrap();
        let sets: Api<StatefulSet> = Api::namespaced(self.client.clone(), &self.namespace);
        let maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        eventually(&format!("the children of {name}"), timeout, async || {
            let set = sets.get_opt(&names::stateful_set(name)).await.ok()??;
            let map = maps.get_opt(&names::config_map(name)).await.ok()??;
            (set.spec?.replicas == Some(2) && map.data.is_some()).then_some(())
        })
        .await
        .unwrap();
        eventually(&format!("the phase of {name}"), timeout, async || {
            jobs.get(name).await.ok()?.status?.phase
        })
        .await
        .unwrap()
    }
}

/// Which of `replicas` leads, once exactly one says so on `/metrics`.
async fn sole_leader(replicas: &[&OperatorProcess], timeout: Duration) -> usize {
    eventually("exactly one leader", timeout, async || {
        let mut leaders = Vec::new();
        for (i, replica) in replicas.iter().enumerate() {
            if replica.is_leader().await? {
                leaders.push(i);
            }
        }
        (leaders.len() == 1).then(|| leaders[0])
    })
    .await
    .unwrap()
}

async fn healthy_and_ready(replica: &OperatorProcess) {
    eventually(
        &format!("{} to be healthy and ready", replica.name),
        Duration::from_secs(30),
        async || {
            let health = replica.get("/healthz").await?;
            let ready = replica.get("/readyz").await?;
            (health == 200 && ready == 200).then_some(())
        },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_a_standby_takes_over_when_it_is_killed() {
    let setup = Setup::start("op-failover").await;
    let (mut replicas, leader) = setup.two_replicas().await;
    let standby = 1 - leader;
    // Both serve; the standby is ready too (it is up, it only does not act).
    healthy_and_ready(&replicas[leader]).await;
    healthy_and_ready(&replicas[standby]).await;

    let phase = setup.reconciled("first", Duration::from_secs(30)).await;
    eprintln!(
        "job first reconciled by {}: {phase:?}",
        replicas[leader].name
    );
    let standby_metrics = replicas[standby].metrics().await.unwrap();
    assert_eq!(
        operator::sample(&standby_metrics, "oxbow_operator_leader"),
        Some(0.0),
        "the standby still does not lead"
    );
    assert!(
        !standby_metrics.contains("oxbow_operator_reconciles_total{"),
        "the standby reconciles nothing: {standby_metrics}"
    );

    // SIGKILL: no release; the standby takes the Lease once it expires.
    let old = replicas[leader].name.clone();
    replicas[leader].kill();
    let killed_at = Instant::now();
    let takeover = setup.taken_over_by(&replicas[standby], killed_at).await;
    let new = &replicas[standby].name;
    eprintln!(
        "takeover after SIGKILL of the leader {old}: {:.1} s (lease {} s)",
        takeover.as_secs_f64(),
        LEASE.as_secs()
    );

    // The new leader acts: a job created after the kill gets its children.
    let phase = setup.reconciled("second", Duration::from_secs(30)).await;
    eprintln!("job second reconciled by {new}: {phase:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_leader_releases_its_lease() {
    let setup = Setup::start("op-release").await;
    let (mut replicas, leader) = setup.two_replicas().await;
    let standby = 1 - leader;
    let old = replicas[leader].name.clone();
    healthy_and_ready(&replicas[leader]).await;

    let terminated_at = Instant::now();
    let status = replicas[leader]
        .terminate(Duration::from_secs(10))
        .await
        .unwrap();
    let exited = terminated_at.elapsed();
    assert!(status.success(), "SIGTERM is a clean stop: {status}");
    // It released the Lease on its way out, before exiting.
    let holder = setup.holder().await;
    assert_ne!(
        holder.as_deref(),
        Some(old.as_str()),
        "the Lease is released (holder cleared) or already taken by the standby"
    );

    let takeover = setup.taken_over_by(&replicas[standby], terminated_at).await;
    eprintln!(
        "SIGTERM of the leader {old}: exited {:.1} s after, holder then {holder:?}; takeover by {} after {:.1} s (lease {} s)",
        exited.as_secs_f64(),
        replicas[standby].name,
        takeover.as_secs_f64(),
        LEASE.as_secs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_reconciles_and_jobs_by_phase() {
    let setup = Setup::start("op-metrics").await;
    let replica = setup.replica("op-a");
    assert_eq!(sole_leader(&[&replica], Duration::from_secs(30)).await, 0);
    let phase = setup.reconciled("counted", Duration::from_secs(30)).await;

    let jobs_series = format!("oxbow_operator_jobs{{phase=\"{}\"}}", phase.as_str());
    let text = eventually(
        "the reconciles and the job's phase on /metrics",
        Duration::from_secs(15),
        async || {
            let text = replica.metrics().await?;
            let ok = operator::sample(&text, "oxbow_operator_reconciles_total{result=\"ok\"}")?;
            let in_phase = operator::sample(&text, &jobs_series)?;
            (ok > 0.0 && in_phase == 1.0).then_some(text)
        },
    )
    .await
    .unwrap();
    let count = operator::sample(&text, "oxbow_operator_reconcile_duration_seconds_count");
    assert!(count.is_some_and(|c| c > 0.0), "{text}");
    assert!(
        text.lines().any(|l| l
            .starts_with("oxbow_operator_reconcile_duration_seconds_bucket{le=\"+Inf\"}")),
        "a reconcile duration histogram: {text}"
    );
    assert!(
        operator::sample(&text, "oxbow_operator_reconcile_duration_seconds_sum").is_some(),
        "{text}"
    );
    assert_eq!(
        operator::sample(&text, "oxbow_operator_leader"),
        Some(1.0),
        "{text}"
    );
    let other_phases = text
        .lines()
        .filter(|l| l.starts_with("oxbow_operator_jobs{") && !l.starts_with(&jobs_series))
        .filter(|l| !l.ends_with(" 0"))
        .count();
    assert_eq!(other_phases, 0, "one job, in one phase: {text}");
}

/// Runs the operator with `env` added, expecting it to stop by itself; its exit status and
/// standard error.
async fn run_to_exit(env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let replica = Replica {
        namespace: "default".into(),
        pod_name: "op-bad".into(),
        lease_name: unique_name("oxbow-operator"),
    };
    let port = oxbow_tests::worker::free_port();
    let mut command =
        operator::command(&operator::binary(), &replica, &format!("127.0.0.1:{port}")).unwrap();
    command.envs(env.iter().copied());
    let mut command = tokio::process::Command::from(command);
    command.kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(20), command.output())
        .await
        .expect("the operator stops by itself on a bad setting")
        .unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_setting_stops_the_operator_with_a_message_naming_it() {
    let (status, stderr) = run_to_exit(&[("OXBOW_LEADER_ELECTION", "maybe")]).await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("OXBOW_LEADER_ELECTION") && stderr.contains("maybe"),
        "{stderr}"
    );

    // An address already taken cannot be served on.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (status, stderr) = run_to_exit(&[("OXBOW_METRICS_ADDR", &addr)]).await;
    assert!(!status.success(), "{status}: {stderr}");
    assert!(status.code().is_some(), "an exit, not a signal: {status}");
    assert!(
        stderr.contains(&addr) && stderr.contains("OXBOW_METRICS_ADDR"),
        "{stderr}"
    );
    drop(taken);
}
