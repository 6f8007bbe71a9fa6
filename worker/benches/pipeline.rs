//! Hot paths of the pipeline engine: decode, filter, window update, encode, and a snapshot of
//! 10,000 keys with open windows.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{hint::black_box, sync::Arc};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use oxbow_worker::{
    bench::{Generator, encode_event, pipeline::reference_pipeline},
    engine::{InputRecord, Output, Task, Value, codec, expr::Expr},
};

fn events(n: usize) -> Vec<Vec<u8>> {
    let mut g = Generator::new();
    (0..n)
        .map(|_| {
            let mut v = Vec::new();
            encode_event(&mut v, &g.next_event());
            v
        })
        .collect()
}

fn hot_paths(c: &mut Criterion) {
    let inputs = events(10_000);
    let slots: Vec<Arc<str>> = ["amount", "key", "ts"].into_iter().map(Arc::from).collect();

    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(inputs.len() as u64));
    group.bench_function("decode_json_projection", |b| {
        let mut row = Vec::new();
        b.iter(|| {
            for v in &inputs {
                codec::decode_json_into(black_box(v), &slots, &mut row).unwrap();
            }
        })
    });
    let rows: Vec<Vec<Option<Value>>> = inputs
        .iter()
        .map(|v| {
            let mut row = Vec::new();
            codec::decode_json_into(v, &slots, &mut row).unwrap();
            row
        })
        .collect();
    let compiled = Expr::compile("amount >= 100", &slots).unwrap();
    let interpreted = Expr::interpret("amount >= 100", &slots).unwrap();
    group.bench_function("filter_compiled", |b| {
        b.iter(|| {
            rows.iter()
                .filter(|r| compiled.eval_bool(black_box(r)).unwrap())
                .count()
        })
    });
    group.bench_function("filter_interpreted", |b| {
        b.iter(|| {
            rows.iter()
                .filter(|r| interpreted.eval_bool(black_box(r)).unwrap())
                .count()
        })
    });
    group.bench_function("encode_row", |b| {
        let names: Vec<Arc<str>> = ["key", "count", "sum", "window_start", "window_end"]
            .into_iter()
            .map(Arc::from)
            .collect();
        let row = [
            Value::Int(1234),
            Value::Int(90),
            Value::Int(45_000),
            Value::Int(1_700_000_000_000),
            Value::Int(1_700_000_001_000),
        ];
        let mut out = Vec::new();
        b.iter(|| {
            for _ in 0..inputs.len() {
                out.clear();
                codec::write_json_object(&mut out, names.iter().map(|n| &**n).zip(row.iter()));
                black_box(&out);
            }
        })
    });
    group.bench_function("task_process", |b| {
        let pipeline = reference_pipeline().unwrap();
        let mut task = Task::new(pipeline);
        let mut output = Output::default();
        b.iter(|| {
            for (i, v) in inputs.iter().enumerate() {
                task.process(
                    &InputRecord {
                        value: Some(v),
                        offset: i as i64,
                        ..Default::default()
                    },
                    &mut output,
                );
            }
            output.clear();
        })
    });
    group.finish();

    // A checkpoint-sized snapshot: 10,000 keys with an open window each.
    let mut task = Task::new(reference_pipeline().unwrap());
    let mut output = Output::default();
    let mut g = Generator::new();
    let mut value = Vec::new();
    for i in 0..200_000 {
        value.clear();
        encode_event(&mut value, &g.next_event());
        task.process(
            &InputRecord {
                value: Some(&value),
                offset: i,
                ..Default::default()
            },
            &mut output,
        );
    }
    assert!(
        task.state().windows.len() >= 9_000,
        "{} open windows",
        task.state().windows.len()
    );
    c.bench_function("snapshot_10k_keys", |b| {
        b.iter(|| black_box(task.snapshot().unwrap()))
    });
    let bytes = task.snapshot().unwrap();
    let pipeline = reference_pipeline().unwrap();
    c.bench_function("restore_10k_keys", |b| {
        b.iter(|| Task::restore(pipeline.clone(), black_box(&bytes)).unwrap())
    });
}

criterion_group!(benches, hot_paths);
criterion_main!(benches);
