//! The window job the worker tests run — `keyBy k`, 1 s tumbling windows of `count()` as `n`
//! and `sum(v)` as `total` — and what its results must be.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context;

use crate::kafka;

/// (key, value, event time)
pub type Event = (i64, i64, i64);

/// (key, window start, count, total)
pub type Row = (i64, i64, i64, i64);

/// Every window that closed before `closing`, sorted.
pub fn expected(events: &[Event], closing: i64) -> Vec<Row> {
    let mut want: BTreeMap<(i64, i64), (i64, i64)> = BTreeMap::new();
    for (k, v, ts) in events {
        if *ts < closing {
            let w = want.entry((*k, ts - ts.rem_euclid(1000))).or_default();
            w.0 += 1;
            w.1 += v;
        }
    }
    want.into_iter()
        .map(|((k, s), (n, t))| (k, s, n, t))
        .collect()
}

/// The committed result rows of a one-partition sink, sorted.
pub fn results(bootstrap: &str, topic: &str, idle: Duration) -> anyhow::Result<Vec<Row>> {
    let values = kafka::read_all(bootstrap, topic, 1, "read_committed", idle)?;
    let mut rows = values
        .iter()
        .map(|v| {
            let row: serde_json::Value =
                serde_json::from_str(v).with_context(|| format!("a result is not JSON: {v}"))?;
            let int = |f: &str| {
                row[f]
                    .as_i64()
                    .with_context(|| format!("no integer {f} in {v}"))
            };
            Ok((int("k")?, int("window_start")?, int("n")?, int("total")?))
        })
        .collect::<anyhow::Result<Vec<Row>>>()?;
    rows.sort();
    Ok(rows)
}

/// Fails with what is missing and what is unexpected unless `got` is exactly `want`.
pub fn assert_exactly(got: &[Row], want: &[Row]) {
    let missing: Vec<_> = want.iter().filter(|w| !got.contains(w)).collect();
    let unexpected: Vec<_> = got.iter().filter(|g| !want.contains(g)).collect();
    assert!(
        missing.is_empty() && unexpected.is_empty(),
        "{} of {} windows missing (first: {:?}), {} unexpected (first: {:?})",
        missing.len(),
        want.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        unexpected.len(),
        unexpected.iter().take(5).collect::<Vec<_>>()
    );
    assert_eq!(got, want, "every window exactly once");
}
