//! The window job the worker tests run — `keyBy k`, 1 s tumbling windows of `count()` as `n`
//! and `sum(v)` as `total` over events `{"k":k,"v":v,"ts":ts}` — and what its results must be.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context;

use crate::{kafka, manifest::Manifest};

/// (key, value, event time)
pub type Event = (i64, i64, i64);

/// (key, window start, count, total)
pub type Row = (i64, i64, i64, i64);

/// How a test's window job differs from the usual one ([`Window::default`]: 1 s windows, no
/// grace, input partitioned by key, `n` and `total`).
#[derive(Clone, Debug)]
pub struct Window {
    /// The tumbling window's size, such as `1s`.
    pub size: &'static str,
    /// `spec.source.eventTime.grace` in seconds; `None` leaves the CRD's default.
    pub grace_seconds: Option<i64>,
    /// Whether the input is partitioned by `k`; if not, the pipeline repartitions through the
    /// shuffle topic.
    pub partitioned: bool,
    /// Whether it sums `v` as `total` besides counting as `n`.
    pub total: bool,
    /// `spec.source.eventTime.idleTimeout`, such as `10s`; `None` leaves the CRD's default.
    pub idle_timeout: Option<&'static str>,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            size: "1s",
            grace_seconds: Some(0),
            partitioned: true,
            total: true,
            idle_timeout: None,
        }
    }
}

/// The window job `name`: reads `input` on `bootstrap`, writes the window results to `output`,
/// checkpoints to `storage`; the checkpoint's other settings and further spec fields are the
/// caller's to add.
pub fn job(
    name: &str,
    bootstrap: &str,
    input: &str,
    output: &str,
    storage: &str,
    window: &Window,
) -> Manifest {
    let grace = window
        .grace_seconds
        .map_or(String::new(), |s| format!(", grace: {s}s"));
    let idle = window
        .idle_timeout
        .map_or(String::new(), |t| format!(", idleTimeout: {t}"));
    let mut manifest = Manifest::new(name, bootstrap, input, output, storage)
        .source(&format!("eventTime: {{field: ts{grace}{idle}}}"));
    if window.partitioned {
        manifest = manifest.source("partitionedBy: \"k\"");
    }
    let total = if window.total {
        ", total: \"sum(v)\""
    } else {
        ""
    };
    manifest.step("keyBy: \"k\"").step(&format!(
        "window: {{tumbling: {}}}, aggregate: {{n: \"count()\"{total}}}",
        window.size
    ))
}

/// Every 1 s window that closed before `closing`, sorted.
pub fn expected(events: &[Event], closing: i64) -> Vec<Row> {
    expected_windows(events, closing, 1000)
}

/// Every tumbling window of `size_ms` that closed before `closing`, sorted.
pub fn expected_windows(events: &[Event], closing: i64, size_ms: i64) -> Vec<Row> {
    let mut want: BTreeMap<(i64, i64), (i64, i64)> = BTreeMap::new();
    for (k, v, ts) in events {
        if *ts < closing {
            let w = want.entry((*k, ts - ts.rem_euclid(size_ms))).or_default();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usual_window_job() {
        let spec = job(
            "sums",
            "kafka:9092",
            "in",
            "out",
            "file:///c",
            &Window::default(),
        )
        .job_spec()
        .unwrap();
        assert_eq!(spec.source.partitioned_by.as_deref(), Some("k"));
        let event_time = spec.source.event_time.unwrap();
        assert_eq!(event_time.field.as_deref(), Some("ts"));
        assert_eq!(event_time.grace.to_string(), "0s");
        assert_eq!(spec.pipeline[0].key_by.as_deref(), Some("k"));
        let window = &spec.pipeline[1];
        assert_eq!(
            window
                .window
                .as_ref()
                .and_then(|w| w.tumbling.as_ref())
                .map(ToString::to_string),
            Some("1s".to_owned())
        );
        let aggregate = window.aggregate.clone().unwrap();
        assert_eq!(aggregate["n"], "count()");
        assert_eq!(aggregate["total"], "sum(v)");
    }

    #[test]
    fn a_varied_window_job() {
        let window = Window {
            size: "1h",
            grace_seconds: None,
            partitioned: false,
            total: false,
            idle_timeout: Some("10s"),
        };
        let spec = job("counts", "kafka:9092", "in", "out", "file:///c", &window)
            .job_spec()
            .unwrap();
        assert_eq!(spec.source.partitioned_by, None);
        assert_eq!(
            spec.source.event_time.unwrap().idle_timeout.to_string(),
            "10s"
        );
        let aggregate = spec.pipeline[1].aggregate.clone().unwrap();
        assert_eq!(aggregate.keys().collect::<Vec<_>>(), ["n"]);
    }

    #[test]
    fn expected_windows_count_and_sum_what_closed() {
        let events = [
            (1, 2, 100),
            (1, 3, 900),
            (1, 4, 1000),
            (2, 5, 1500),
            (1, 6, 2500),
        ];
        assert_eq!(
            expected(&events, 2000),
            [(1, 0, 2, 5), (1, 1000, 1, 4), (2, 1000, 1, 5)]
        );
    }
}
