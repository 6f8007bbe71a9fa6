//! The pipeline engine as a user would check it: windowed results against a naive
//! recomputation on random out-of-order streams, snapshot and restore at any record boundary,
//! compiled expressions against the CEL interpreter, and bad input that never stops the job.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use oxbow_crds::{streamjob::Format, validation};
use oxbow_worker::engine::{
    CompiledPipeline, DeadLetterReason, InputRecord, Output, OutputRecord, Task, Upstream, Value,
    codec, expr::Expr,
};
use proptest::prelude::*;

/// The validated spec of a job with `eventTime` (a YAML flow map's entries), `steps` (YAML list
/// items) and `extra` spec lines.
fn validated(event_time: &str, steps: &str, extra: &str) -> validation::ValidatedSpec {
    let yaml = format!(
        r#"
apiVersion: oxbow.dev/v1alpha1
kind: StreamJob
metadata: {{name: t}}
spec:
  kafka: {{bootstrapServers: "127.0.0.1:9092"}}
  source:
    topics: [in]
    eventTime: {{{event_time}}}
  pipeline:
{steps}
  sink: {{topic: out}}
  checkpoint: {{storage: "file:///tmp/x"}}
{extra}
"#
    );
    let job = oxbow_crds::parse_manifest(&yaml).unwrap();
    validation::validate(&job.spec).unwrap_or_else(|e| panic!("{e}"))
}

fn pipeline(steps: &str, extra: &str) -> Arc<CompiledPipeline> {
    let valid = validated("field: ts, grace: 3ms, idleTimeout: 100ms", steps, extra);
    Arc::new(CompiledPipeline::compile(&valid, Format::Json, Format::Json).unwrap())
}

fn window_pipeline(window: &str) -> Arc<CompiledPipeline> {
    pipeline(
        &format!(
            r#"    - keyBy: "k"
    - window: {window}
      aggregate: {{n: "count()", total: "sum(v)", lo: "min(v)", first: "first(v)"}}"#
        ),
        "",
    )
}

fn record(k: i64, v: i64, ts: i64) -> Vec<u8> {
    format!(r#"{{"k":{k},"v":{v},"ts":{ts}}}"#).into_bytes()
}

fn run(task: &mut Task, inputs: &[Vec<u8>], out: &mut Output) {
    for (i, value) in inputs.iter().enumerate() {
        task.process(
            &InputRecord {
                value: Some(value),
                offset: i as i64,
                ..Default::default()
            },
            out,
        );
    }
}

type WindowRow = (i64, i64, i64, i64, i64, i64, i64);

fn rows(records: &[OutputRecord]) -> Vec<WindowRow> {
    records
        .iter()
        .map(|r| {
            let Value::Map(m) = codec::decode_json_value(&r.value).unwrap() else {
                panic!()
            };
            let int = |f: &str| match &m[f] {
                Value::Int(i) => *i,
                other => panic!("{f} = {other:?}"),
            };
            (
                int("k"),
                int("window_start"),
                int("window_end"),
                int("n"),
                int("total"),
                int("lo"),
                int("first"),
            )
        })
        .collect()
}

/// A naive recomputation: replays arrival order only to decide lateness, then recomputes every
/// window from the accepted records.
fn naive(
    shape: &str,
    size: i64,
    slide: i64,
    grace: i64,
    inputs: &[(i64, i64, i64)],
) -> BTreeSet<WindowRow> {
    let mut stream_time: Option<i64> = None;
    // (key, start) -> records (arrival order)
    let mut windows: BTreeMap<(i64, i64), Vec<(i64, i64)>> = BTreeMap::new();
    let mut accepted: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
    for &(k, v, ts) in inputs {
        let watermark = stream_time.map_or(i64::MIN, |s| s - grace);
        match shape {
            "session" => {
                if ts >= watermark {
                    accepted.entry(k).or_default().push((ts, v));
                }
            }
            _ => {
                let starts: Vec<i64> = (0..)
                    .map(|i| ts - ts.rem_euclid(slide) - i * slide)
                    .take_while(|s| *s > ts - size)
                    .filter(|s| s + size > watermark)
                    .collect();
                for s in starts {
                    windows.entry((k, s)).or_default().push((ts, v));
                }
            }
        }
        stream_time = Some(stream_time.map_or(ts, |s| s.max(ts)));
    }
    let row = |k: i64, start: i64, end: i64, recs: &[(i64, i64)]| -> WindowRow {
        let n = recs.len() as i64;
        let total = recs.iter().map(|r| r.1).sum();
        let lo = recs.iter().map(|r| r.1).min().unwrap();
        let first = recs.iter().min_by_key(|r| r.0).unwrap().1; // earliest ts, first arrival on ties
        (k, start, end, n, total, lo, first)
    };
    match shape {
        "session" => {
            let mut out = BTreeSet::new();
            for (k, mut recs) in accepted {
                let arrival: Vec<(i64, i64)> = recs.clone();
                recs.sort_by_key(|r| r.0);
                let mut group: Vec<(i64, i64)> = Vec::new();
                let mut flush = |group: &mut Vec<(i64, i64)>| {
                    if group.is_empty() {
                        return;
                    }
                    let start = group.iter().map(|r| r.0).min().unwrap();
                    let end = group.iter().map(|r| r.0).max().unwrap() + size;
                    // `first` breaks event-time ties by arrival.
                    let in_arrival: Vec<(i64, i64)> = arrival
                        .iter()
                        .filter(|r| r.0 >= start && r.0 < end - size + 1)
                        .copied()
                        .collect();
                    out.insert(row(k, start, end, &in_arrival));
                    group.clear();
                };
                for r in recs {
                    if group.last().is_some_and(|l| r.0 - l.0 >= size) {
                        flush(&mut group);
                    }
                    group.push(r);
                }
                flush(&mut group);
            }
            out
        }
        _ => windows
            .into_iter()
            .map(|((k, s), recs)| row(k, s, s + size, &recs))
            .collect(),
    }
}

fn stream() -> impl Strategy<Value = Vec<(i64, i64, i64)>> {
    // Keys 0..4, values -50..50, event times wandering forward with disorder.
    prop::collection::vec((0i64..4, -50i64..50, 0i64..40, any::<bool>()), 1..120).prop_map(
        |steps| {
            let mut t = 1000;
            steps
                .into_iter()
                .map(|(k, v, dt, back)| {
                    t += dt / 4;
                    let ts = if back { t - dt } else { t };
                    (k, v, ts)
                })
                .collect()
        },
    )
}

fn engine_rows(
    p: Arc<CompiledPipeline>,
    inputs: &[(i64, i64, i64)],
) -> (BTreeSet<WindowRow>, usize) {
    let encoded: Vec<Vec<u8>> = inputs
        .iter()
        .map(|(k, v, ts)| record(*k, *v, *ts))
        .collect();
    let mut task = Task::new(p);
    let mut out = Output::default();
    run(&mut task, &encoded, &mut out);
    task.finish(&mut out);
    let late = out
        .dead_letters
        .iter()
        .filter(|d| d.reason == DeadLetterReason::Late)
        .count();
    assert_eq!(
        late,
        out.dead_letters.len(),
        "only late records are dead-lettered: {:?}",
        out.dead_letters
    );
    let rows = rows(&out.records);
    let set: BTreeSet<WindowRow> = rows.iter().copied().collect();
    assert_eq!(set.len(), rows.len(), "no window fires twice");
    (set, late)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn tumbling_windows_match_a_naive_recomputation(inputs in stream()) {
        let (rows, _) = engine_rows(window_pipeline("{tumbling: 10ms}"), &inputs);
        prop_assert_eq!(rows, naive("tumbling", 10, 10, 3, &inputs));
    }

    #[test]
    fn hopping_windows_match_a_naive_recomputation(inputs in stream()) {
        let (rows, _) = engine_rows(window_pipeline("{hopping: {size: 12ms, slide: 4ms}}"), &inputs);
        prop_assert_eq!(rows, naive("hopping", 12, 4, 3, &inputs));
    }

    #[test]
    fn session_windows_match_a_naive_recomputation(inputs in stream()) {
        let (rows, _) = engine_rows(window_pipeline("{session: {gap: 6ms}}"), &inputs);
        prop_assert_eq!(rows, naive("session", 6, 6, 3, &inputs));
    }

    #[test]
    fn a_restored_snapshot_continues_exactly_like_the_original(inputs in stream(), cut in 0usize..120, shape in 0usize..3) {
        let window = ["{tumbling: 10ms}", "{hopping: {size: 12ms, slide: 4ms}}", "{session: {gap: 6ms}}"][shape];
        let p = window_pipeline(window);
        let encoded: Vec<Vec<u8>> = inputs.iter().map(|(k, v, ts)| record(*k, *v, *ts)).collect();
        let cut = cut.min(encoded.len());

        let mut original = Task::new(p.clone());
        let mut before = Output::default();
        run(&mut original, &encoded[..cut], &mut before);
        let snapshot = original.snapshot().unwrap();
        let mut restored = Task::restore(p, &snapshot).unwrap();
        prop_assert_eq!(restored.state(), original.state());

        let (mut a, mut b) = (Output::default(), Output::default());
        run(&mut original, &encoded[cut..], &mut a);
        run(&mut restored, &encoded[cut..], &mut b);
        original.finish(&mut a);
        restored.finish(&mut b);
        prop_assert_eq!(a.records, b.records);
        prop_assert_eq!(a.dead_letters, b.dead_letters);
    }

    #[test]
    fn arbitrary_input_never_panics_and_is_accounted_for(values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 1..50)) {
        let p = window_pipeline("{tumbling: 10ms}");
        let mut task = Task::new(p);
        let mut out = Output::default();
        run(&mut task, &values, &mut out);
        task.finish(&mut out);
        prop_assert_eq!(task.state().counters.records_in, values.len() as u64);
    }
}

#[test]
fn windows_fire_exactly_at_end_plus_grace() {
    let p = window_pipeline("{tumbling: 10ms}");
    let mut task = Task::new(p);
    let mut out = Output::default();
    run(
        &mut task,
        &[record(1, 5, 0), record(1, 6, 9), record(1, 7, 12)],
        &mut out,
    );
    assert!(out.records.is_empty(), "stream time 12 < end 10 + grace 3");
    run(&mut task, &[record(2, 1, 13)], &mut out);
    assert_eq!(rows(&out.records), [(1, 0, 10, 2, 11, 5, 5)]);
    // Within grace the window [10, 20) still takes records; [0, 10) has fired: late.
    out.clear();
    run(&mut task, &[record(1, 100, 9), record(1, 1, 10)], &mut out);
    assert_eq!(out.dead_letters.len(), 1);
    assert_eq!(out.dead_letters[0].reason, DeadLetterReason::Late);
    assert_eq!(&*out.dead_letters[0].step, "spec.pipeline[1].aggregate");
    assert_eq!(task.state().counters.dead_lettered[3], 1);
}

#[test]
fn an_idle_partition_still_fires_its_windows() {
    let p = window_pipeline("{tumbling: 10ms}");
    let mut task = Task::new(p);
    let mut out = Output::default();
    task.process(
        &InputRecord {
            value: Some(&record(1, 5, 4)),
            ..Default::default()
        },
        &mut out,
    );
    task.on_idle(1_100, &mut out);
    assert!(out.records.is_empty(), "not idle before it has caught up");
    task.caught_up(1_000);
    task.on_idle(1_050, &mut out);
    assert!(out.records.is_empty(), "not idle before idleTimeout");
    task.on_idle(1_100, &mut out);
    assert_eq!(rows(&out.records), [(1, 0, 10, 1, 5, 5, 5)]);
}

fn feed(task: &mut Task, k: i64, v: i64, ts: i64, out: &mut Output) {
    task.process(
        &InputRecord {
            value: Some(&record(k, v, ts)),
            ..Default::default()
        },
        out,
    );
}

#[test]
fn a_downtime_never_moves_event_time_after_a_restore() {
    let p = window_pipeline("{tumbling: 10ms}");
    let mut task = Task::new(Arc::clone(&p));
    let mut out = Output::default();
    feed(&mut task, 1, 5, 4, &mut out);
    task.caught_up(1_000);
    let snapshot = task.snapshot().unwrap();
    // Restored an hour later: the first empty polls must not fire the open window.
    let mut restored = Task::restore(Arc::clone(&p), &snapshot).unwrap();
    restored.on_idle(3_600_000, &mut out);
    assert!(!restored.is_idle(3_600_000));
    assert!(out.records.is_empty(), "fired after a downtime: {out:?}");
    // The backlog arrives and completes the window; nothing is late.
    feed(&mut restored, 1, 7, 6, &mut out);
    assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
    // Caught up again, it goes idle on this process's clock only.
    restored.caught_up(3_600_000);
    restored.on_idle(3_600_099, &mut out);
    assert!(out.records.is_empty());
    restored.on_idle(3_600_100, &mut out);
    assert_eq!(rows(&out.records), [(1, 0, 10, 2, 12, 5, 5)]);
}

#[test]
fn a_version_1_snapshot_restores_without_its_processing_time() {
    // Format 1 carried the processing time of the last record; a restore must not use it.
    #[derive(serde::Serialize)]
    struct V1 {
        stream_time: Option<i64>,
        last_activity: Option<(i64, i64)>,
        windows: oxbow_worker::engine::window::Windows,
        counters: oxbow_worker::engine::task::TaskCounters,
    }
    let p = window_pipeline("{tumbling: 10ms}");
    let mut task = Task::new(Arc::clone(&p));
    let mut out = Output::default();
    feed(&mut task, 1, 5, 4, &mut out);
    let state = task.state().clone();
    let mut bytes = oxbow_worker::engine::snapshot::encode(&V1 {
        stream_time: state.stream_time,
        last_activity: Some((1_000, 4)),
        windows: state.windows,
        counters: state.counters,
    })
    .unwrap();
    bytes[4..6].copy_from_slice(&1u16.to_le_bytes());
    let mut restored = Task::restore(p, &bytes).unwrap();
    assert_eq!(restored.state().stream_time, Some(4));
    restored.on_idle(1_000_000, &mut out);
    assert!(
        out.records.is_empty(),
        "the old processing time moved event time"
    );
    feed(&mut restored, 1, 7, 6, &mut out);
    feed(&mut restored, 2, 1, 20, &mut out);
    assert_eq!(rows(&out.records), [(1, 0, 10, 2, 12, 5, 5)]);
}

#[test]
fn a_record_stops_the_idle_clock() {
    let p = window_pipeline("{tumbling: 10ms}");
    let mut task = Task::new(p);
    let mut out = Output::default();
    feed(&mut task, 1, 5, 4, &mut out);
    task.caught_up(1_000);
    feed(&mut task, 1, 6, 5, &mut out);
    task.on_idle(5_000, &mut out);
    assert!(
        out.records.is_empty(),
        "a partition with new records is not idle"
    );
    assert!(!task.is_caught_up());
}

/// A shuffled record: its value, the upstream that wrote it and that upstream's stream time.
fn shuffled(k: i64, v: i64, ts: i64, from: &str, upstream_time: i64) -> (Vec<u8>, String, i64) {
    (record(k, v, ts), from.to_owned(), upstream_time)
}

fn feed_shuffled(task: &mut Task, r: &(Vec<u8>, String, i64), out: &mut Output) {
    task.process(
        &InputRecord {
            value: Some(&r.0),
            upstream: Some(Upstream {
                id: &r.1,
                stream_time: Some(r.2),
                idle: false,
            }),
            ..Default::default()
        },
        out,
    );
}

fn shuffle_task(upstreams: &[&str]) -> Task {
    let upstreams: Vec<String> = upstreams.iter().map(|s| (*s).to_owned()).collect();
    Task::new(window_pipeline("{tumbling: 10ms}")).with_upstreams(upstreams.into())
}

#[test]
fn the_shuffle_stage_waits_for_its_slowest_upstream() {
    let mut task = shuffle_task(&["in/0", "in/1"]);
    let mut out = Output::default();
    // Upstream in/0 runs ahead to 40 ms while in/1 (down, or behind) has not reported.
    for ts in [1, 12, 25, 40] {
        feed_shuffled(&mut task, &shuffled(1, 1, ts, "in/0", ts), &mut out);
    }
    assert!(
        out.records.is_empty(),
        "fired before every upstream reported"
    );
    // in/1 comes back with its backlog from 2 ms on: none of it is late.
    for ts in [2, 9, 14] {
        feed_shuffled(&mut task, &shuffled(1, 10, ts, "in/1", ts), &mut out);
    }
    assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
    // Its progress (14) closes [0, 10) only: 14 - 3 ms grace.
    assert_eq!(rows(&out.records), [(1, 0, 10, 3, 21, 1, 1)]);
    // A progress report without a record moves it too.
    task.observe(
        &Upstream {
            id: "in/1",
            stream_time: Some(40),
            idle: false,
        },
        &mut out,
    );
    assert_eq!(
        rows(&out.records),
        [
            (1, 0, 10, 3, 21, 1, 1),
            (1, 10, 20, 2, 11, 1, 1),
            (1, 20, 30, 1, 1, 1, 1)
        ]
    );
}

#[test]
fn an_idle_upstream_does_not_hold_the_shuffle_stage() {
    let mut task = shuffle_task(&["in/0", "in/1"]);
    let mut out = Output::default();
    task.observe(
        &Upstream {
            id: "in/1",
            stream_time: None,
            idle: true,
        },
        &mut out,
    );
    feed_shuffled(&mut task, &shuffled(1, 1, 1, "in/0", 1), &mut out);
    feed_shuffled(&mut task, &shuffled(1, 1, 20, "in/0", 20), &mut out);
    assert_eq!(rows(&out.records), [(1, 0, 10, 1, 1, 1, 1)]);
}

#[test]
fn the_shuffle_stage_keeps_its_upstreams_progress_across_a_restore() {
    let mut task = shuffle_task(&["in/0", "in/1"]);
    let mut out = Output::default();
    feed_shuffled(&mut task, &shuffled(1, 1, 30, "in/0", 30), &mut out);
    feed_shuffled(&mut task, &shuffled(1, 1, 5, "in/1", 5), &mut out);
    let snapshot = task.snapshot().unwrap();
    let mut restored = Task::restore(window_pipeline("{tumbling: 10ms}"), &snapshot)
        .unwrap()
        .with_upstreams(vec!["in/0".to_owned(), "in/1".to_owned()].into());
    // in/1, restarted, reports no stream time yet: the stage holds at 5 rather than jump.
    feed_shuffled(&mut restored, &shuffled(1, 1, 8, "in/1", 8), &mut out);
    assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
    assert!(out.records.is_empty(), "{:?}", rows(&out.records));
    assert_eq!(restored.state().stream_time, Some(8));
}

#[test]
fn bad_records_go_to_the_dead_letter_output_with_their_step() {
    let p = pipeline(
        r#"    - filter: "amount > 10"
    - map: {k: "k", doubled: "amount * 2", ts: "ts"}
    - keyBy: "k"
    - window: {tumbling: 10ms}
      aggregate: {total: "sum(doubled)"}"#,
        "",
    );
    let mut task = Task::new(p);
    let mut out = Output::default();
    let inputs: Vec<Vec<u8>> = [
        &br#"not json"#[..],
        br#"{"k":1,"amount":20}"#,                         // no event time
        br#"{"k":1,"amount":"twenty","ts":1}"#,            // type error in the filter
        br#"{"k":1,"amount":9223372036854775807,"ts":1}"#, // overflow in the map
        br#"{"amount":20,"ts":1}"#,                        // missing key field in the map
        br#"{"k":1,"amount":20,"ts":1}"#,                  // fine
    ]
    .iter()
    .map(|b| b.to_vec())
    .collect();
    run(&mut task, &inputs, &mut out);
    task.finish(&mut out);
    let got: Vec<(DeadLetterReason, &str)> = out
        .dead_letters
        .iter()
        .map(|d| (d.reason, &*d.step))
        .collect();
    assert_eq!(
        got,
        [
            (DeadLetterReason::Decode, "spec.source.format"),
            (DeadLetterReason::EventTime, "spec.source.eventTime.field"),
            (DeadLetterReason::Eval, "spec.pipeline[0].filter"),
            (DeadLetterReason::Eval, "spec.pipeline[1].map"),
            (DeadLetterReason::Eval, "spec.pipeline[1].map"),
        ]
    );
    assert!(
        out.dead_letters[3].message.contains("overflow"),
        "{}",
        out.dead_letters[3].message
    );
    assert_eq!(
        out.dead_letters[0].value.as_deref(),
        Some(&b"not json"[..]),
        "the original bytes are kept"
    );
    assert_eq!(out.records.len(), 1);
    assert_eq!(task.state().counters.records_in, 6);
}

#[test]
fn a_filter_only_pipeline_passes_records_through_unchanged() {
    let p = pipeline(
        r#"    - filter: "size(name) > 3 && name.startsWith('o')""#,
        "",
    );
    let mut task = Task::new(p);
    let mut out = Output::default();
    let inputs = [
        br#"{"name":"oxbow", "ts": 5, "extra": [1,{"a":null}]}"#.to_vec(),
        br#"{"name":"ox","ts":6}"#.to_vec(),
    ];
    run(&mut task, &inputs, &mut out);
    assert_eq!(out.records.len(), 1);
    assert_eq!(out.records[0].value, inputs[0]);
    assert_eq!(out.records[0].timestamp_ms, 5);
}

#[test]
fn snapshots_refuse_foreign_or_newer_bytes() {
    let p = window_pipeline("{tumbling: 10ms}");
    assert!(
        Task::restore(p.clone(), b"garbage")
            .unwrap_err()
            .to_string()
            .contains("header")
    );
    let mut newer = Task::new(p.clone()).snapshot().unwrap();
    newer[4] = 99;
    assert!(
        Task::restore(p, &newer)
            .unwrap_err()
            .to_string()
            .contains("upgrade the worker")
    );
}

fn slots() -> Vec<Arc<str>> {
    ["a", "b", "s", "m"].into_iter().map(Arc::from).collect()
}

fn row() -> impl Strategy<Value = Vec<Option<Value>>> {
    (
        prop::option::weighted(0.9, -1000i64..1000),
        prop::option::weighted(0.9, -1e6f64..1e6),
        prop::option::weighted(0.9, "[a-c]{0,4}"),
    )
        .prop_map(|(a, b, s)| {
            let map = Value::Map(Arc::new(BTreeMap::from([(
                "x".to_owned(),
                Value::Int(a.unwrap_or(0)),
            )])));
            vec![
                a.map(Value::Int),
                b.map(Value::Double),
                s.map(|s| Value::string(&s)),
                Some(map),
            ]
        })
}

const EXPRESSIONS: &[&str] = &[
    "a > 10 && b < 0.0",
    "10 < a",
    "0.5 >= b",
    "s == 'ab'",
    "'ab' != s",
    "a == 1.0",
    "s < 3",
    "a >= 100 || s == 'ab'",
    "!(a == 3) && a != 4",
    "a + 1 > a - 1",
    "a * 3 % 7 == 2",
    "a / 3",
    "b * 2.0 + 1.5",
    "-a",
    "a > 0 ? s : 'neg'",
    "size(s) + 1",
    "s.size() == 2",
    "s.startsWith('a') || s.endsWith('c') || s.contains('b')",
    "string(a) + s",
    "double(a) < b",
    "int(b)",
    "m.x == a",
    "has(m.x) && !has(m.y)",
    "m['x'] + 1",
    "a in [1, 2, 3] || s in ['a', 'b']",
    "'x' in m",
    "[a, 1][1]",
    "{'k': a}.k",
    "a < b",
    "a == b",
    "s < 'b'",
    "a + b",
    "s + a",
    "uint(a)",
    "a > 1 && s",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn compiled_expressions_agree_with_the_cel_interpreter(row in row(), i in 0usize..EXPRESSIONS.len()) {
        let source = EXPRESSIONS[i];
        let compiled = Expr::compile(source, &slots()).unwrap();
        prop_assert!(compiled.is_compiled(), "{} fell back to the interpreter", source);
        let interpreted = Expr::interpret(source, &slots()).unwrap();
        let (c, r) = (compiled.eval(&row), interpreted.eval(&row));
        match (&c, &r) {
            (Ok(x), Ok(y)) => prop_assert!(x.cel_eq(y), "{}: compiled {:?}, interpreted {:?}", source, x, y),
            (Err(_), Err(_)) => {}
            _ => prop_assert!(false, "{}: compiled {:?}, interpreted {:?} on {:?}", source, c, r, row),
        }
    }
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<u64>().prop_map(Value::UInt),
        any::<f64>().prop_map(Value::Double),
        ".{0,8}".prop_map(|s| Value::string(&s)),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(|v| Value::List(Arc::new(v))),
            prop::collection::btree_map("[a-z]{0,2}", inner, 0..3)
                .prop_map(|m| Value::Map(Arc::new(m))),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Any JSON in any field: every expression evaluates to a value or an error, never a panic.
    #[test]
    fn expressions_never_panic_on_arbitrary_json(values in prop::collection::vec(prop::option::of(any_json()), 4)) {
        for source in EXPRESSIONS {
            let compiled = Expr::compile(source, &slots()).unwrap();
            let _ = compiled.eval(&values);
        }
    }
}

#[test]
fn expressions_the_compiler_does_not_cover_run_on_the_interpreter() {
    let e = Expr::compile("[1, 2, 3].exists(x, x == a)", &slots()).unwrap();
    assert!(!e.is_compiled());
    let row = vec![Some(Value::Int(2)), None, None, None];
    assert_eq!(e.eval(&row).unwrap(), Value::Bool(true));
    assert!(
        Expr::compile("nope > 1", &slots())
            .unwrap_err()
            .contains("unknown field")
    );
}

/// The window pipeline with `aggregate` (a YAML flow map) over `window`, as the worker compiles
/// it: with the shape of its window state.
fn shaped(window: &str, aggregate: &str) -> Arc<CompiledPipeline> {
    let steps = format!("    - keyBy: \"k\"\n    - window: {window}\n      aggregate: {aggregate}");
    let valid = validated("field: ts, grace: 0ms", &steps, "");
    let shape = oxbow_crds::state_shape::state_shape(&valid.pipeline);
    Arc::new(
        CompiledPipeline::compile(&valid, Format::Json, Format::Json)
            .unwrap()
            .with_state_shape(shape),
    )
}

#[test]
fn an_added_aggregation_starts_empty_at_the_upgrade_and_the_others_go_on() {
    let old = shaped("{tumbling: 10ms}", r#"{n: "count()", total: "sum(v)"}"#);
    let mut task = Task::new(old);
    let mut out = Output::default();
    feed(&mut task, 1, 5, 1, &mut out);
    feed(&mut task, 1, 7, 2, &mut out);
    let snapshot = task.snapshot().unwrap();
    // Reordered, and `top` added mid-window.
    let new = shaped(
        "{tumbling: 10ms}",
        r#"{total: "sum(v)", top: "max(v)", n: "count()"}"#,
    );
    let mut task = Task::restore(new, &snapshot).unwrap();
    feed(&mut task, 1, 3, 3, &mut out);
    feed(&mut task, 1, 9, 12, &mut out);
    feed(&mut task, 2, 0, 30, &mut out);
    let rows: Vec<serde_json::Value> = out
        .records
        .iter()
        .map(|r| serde_json::from_slice(&r.value).unwrap())
        .collect();
    assert_eq!(
        rows,
        [
            serde_json::json!({"k": 1, "total": 15, "top": 3, "n": 3, "window_start": 0, "window_end": 10}),
            serde_json::json!({"k": 1, "total": 9, "top": 9, "n": 1, "window_start": 10, "window_end": 20}),
        ]
    );
}

#[test]
fn window_state_of_another_shape_is_refused_naming_both() {
    let old = shaped("{tumbling: 10ms}", r#"{n: "count()"}"#);
    let mut task = Task::new(old);
    let mut out = Output::default();
    feed(&mut task, 1, 5, 1, &mut out);
    let snapshot = task.snapshot().unwrap();
    for (window, aggregate, says) in [
        (
            "{tumbling: 20ms}",
            r#"{n: "count()"}"#,
            "the window changed from tumbling 10ms to tumbling 20ms",
        ),
        (
            "{tumbling: 10ms}",
            r#"{n: "sum(v)"}"#,
            "aggregate.n: changed from count() to sum(v)",
        ),
    ] {
        let err = Task::restore(shaped(window, aggregate), &snapshot)
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{err}");
        assert!(
            err.contains("The snapshot holds a tumbling 10ms window"),
            "{err}"
        );
        assert!(err.contains("discardIncompatibleState"), "{err}");
    }
}
