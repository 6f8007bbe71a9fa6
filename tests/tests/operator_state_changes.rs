//! Upgrades that change the window state, through the real operator, the real control plane,
//! real worker processes and the real broker, on the job `sums` (`n: count()` and
//! `total: sum(v)` per key in 1 s windows):
//!
//! - adding `max(v)` mid-window: the old aggregations go on across the upgrade, the new one
//!   counts from the upgrade on, and every row has every field;
//! - changing the window's size: refused before anything stops, with UpgradeBlocked naming the
//!   step, while the job keeps running the old pipeline — then, with
//!   `upgrade.discardIncompatibleState`, carried out with that state started empty.
//!
//! Results are checked against an independent model of the windows.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeMap, time::Duration};

use oxbow_crds::{
    names,
    streamjob::{ConditionType, Phase},
};
use oxbow_tests::{
    kafka,
    lifecycle::{Setup, is_true},
    windows::{self, Event},
};

/// Waits until the job has consumed its input up to `position` in all.
async fn consumed(setup: &Setup, position: i64) {
    let group = names::consumer_group(&setup.namespace, "sums");
    setup
        .wait("the input to be consumed", Duration::from_secs(60))
        .until(async || {
            let committed =
                kafka::committed_total(&setup.bootstrap, &group, &setup.input, 2).ok()?;
            (committed >= position).then_some(())
        })
        .await
        .unwrap();
}

/// The pipeline of `sums` with `window` and `aggregate` (JSON).
fn pipeline(window: serde_json::Value, aggregate: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"spec": {"pipeline": [
        {"keyBy": "k"},
        {"window": window, "aggregate": aggregate},
    ]}})
}

/// Every result row as JSON, in the sink's order.
fn rows(setup: &Setup) -> Vec<serde_json::Value> {
    kafka::read_all(
        &setup.bootstrap,
        &setup.output,
        1,
        "read_committed",
        Duration::from_secs(2),
    )
    .unwrap()
    .iter()
    .map(|v| serde_json::from_str(v).unwrap())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregation_added_mid_window_counts_from_the_upgrade_and_the_others_go_on() {
    let setup = Setup::start("state-add", 1).await;
    setup.running(1).await;
    // Events 0..100 at base + 25 i: windows of 40 events; the third is open at the upgrade.
    setup.send(0, 100).await;
    consumed(&setup, 100).await;
    setup
        .patch(pipeline(
            serde_json::json!({"tumbling": "1s"}),
            serde_json::json!({"n": "count()", "total": "sum(v)", "top": "max(v)"}),
        ))
        .await;
    let status = setup
        .status_when("the upgrade", Duration::from_secs(120), |s| {
            s.phase == Some(Phase::Running)
                && s.operation.is_none()
                && s.ready_replicas == 1
                && s.observed_generation == Some(2)
        })
        .await;
    assert!(is_true(&status, ConditionType::Ready), "{status:#?}");
    setup.send(100, 200).await;
    setup.assert_exactly_once(200).await;

    // `top`: absent from rows the old pipeline emitted, the maximum of what arrived since the
    // upgrade for the window open then, and of everything for later windows.
    let base = rows(&setup)
        .iter()
        .map(|r| r["window_start"].as_i64().unwrap())
        .min()
        .unwrap();
    let event = |i: i64| -> Event { (i % 6, i % 7, base + 25 * i) };
    let mut top: BTreeMap<(i64, i64), i64> = BTreeMap::new();
    for (k, v, ts) in (100..200).map(event) {
        let w = top.entry((k, ts - ts.rem_euclid(1000))).or_insert(v);
        *w = (*w).max(v);
    }
    for row in rows(&setup) {
        let (k, start) = (
            row["k"].as_i64().unwrap(),
            row["window_start"].as_i64().unwrap(),
        );
        for field in ["k", "n", "total", "window_start", "window_end"] {
            assert!(row[field].is_i64(), "{field} missing in {row}");
        }
        if start < base + 2000 {
            assert!(
                row.get("top").is_none(),
                "emitted before the upgrade: {row}"
            );
        } else if let Some(want) = top.get(&(k, start)) {
            assert_eq!(row["top"].as_i64(), Some(*want), "{row}");
        }
    }
    setup.finish(200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_window_size_is_refused_and_then_carried_out_with_its_state_started_empty() {
    let setup = Setup::start("state-window", 1).await;
    setup.running(1).await;
    setup.send(0, 100).await;
    let before = setup.status().await;
    setup
        .patch(pipeline(
            serde_json::json!({"tumbling": "2s"}),
            serde_json::json!({"n": "count()", "total": "sum(v)"}),
        ))
        .await;
    let (status, blocked) = setup
        .condition_true(ConditionType::UpgradeBlocked, Duration::from_secs(60))
        .await;
    assert_eq!(blocked.reason, "IncompatibleState");
    assert!(
        blocked.message.contains(
            "spec.pipeline[1]: the window changed from tumbling 1000ms to tumbling 2000ms"
        ),
        "{}",
        blocked.message
    );
    assert!(is_true(&status, ConditionType::Stalled), "{status:#?}");
    // Nothing was stopped: the same workers run the old pipeline and its windows are right.
    assert_eq!(status.phase, Some(Phase::Running));
    assert_eq!(status.operation, None);
    assert_eq!(status.savepoint, before.savepoint, "no savepoint was taken");
    setup.send(100, 200).await;
    setup.assert_exactly_once(200).await;

    // With the opt-in the upgrade goes on; the 1 s windows' state is dropped and the 2 s
    // windows count from the upgrade on.
    setup
        .patch(serde_json::json!({"spec": {"upgrade": {"discardIncompatibleState": true}}}))
        .await;
    setup
        .status_when("the upgrade", Duration::from_secs(120), |s| {
            s.phase == Some(Phase::Running)
                && s.operation.is_none()
                && s.ready_replicas == 1
                && !is_true(s, ConditionType::UpgradeBlocked)
                && s.observed_generation == Some(3)
        })
        .await;
    let rows_before = rows(&setup).len();
    // Fresh windows well after everything so far: events 400..480 and a closing one.
    let base = rows(&setup)
        .iter()
        .map(|r| r["window_start"].as_i64().unwrap())
        .min()
        .unwrap();
    let events: Vec<Event> = (400..480).map(|i| (i % 6, i % 7, base + 25 * i)).collect();
    let producer = kafka::producer(&setup.bootstrap).unwrap();
    let closing = base + 25 * 480 + 5_000;
    let sent = events
        .iter()
        .copied()
        .chain((0..6).map(|k| (k, 0, closing)))
        .map(|e| ((e.0 % 2) as i32, e));
    kafka::produce(&producer, &setup.input, sent).await.unwrap();
    let want = windows::expected_windows(&events, closing, 2000);
    let got = setup
        .wait("the 2 s windows", Duration::from_secs(60))
        .until(async || {
            let new: Vec<windows::Row> = rows(&setup)[rows_before..]
                .iter()
                .filter_map(|r| {
                    let width = r["window_end"].as_i64()? - r["window_start"].as_i64()?;
                    (width == 2000).then_some(())?;
                    Some((
                        r["k"].as_i64()?,
                        r["window_start"].as_i64()?,
                        r["n"].as_i64()?,
                        r["total"].as_i64()?,
                    ))
                })
                .filter(|r| r.1 >= base + 25 * 400 - 2000)
                .collect();
            (new.len() >= want.len()).then_some(new)
        })
        .await
        .unwrap();
    let mut got = got;
    got.sort();
    windows::assert_exactly(&got, &want);
}
