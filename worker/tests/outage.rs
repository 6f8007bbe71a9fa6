//! A broker outage (librdkafka's mock cluster, fault injection — the one place a mock is used,
//! because a real broker cannot be taken down and brought back on cue here): the worker rides
//! it out and every result arrives once the broker is back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use oxbow_crds::{
    assignment::assign,
    jobfile::{JobFile, Restore},
};
use oxbow_worker::runtime::{Worker, WorkerConfig};
use rdkafka::{
    ClientConfig, Message,
    consumer::{BaseConsumer, Consumer},
    mocking::MockCluster,
    producer::{BaseProducer, BaseRecord, Producer},
};

fn produce(bootstrap: &str, topic: &str, events: impl Iterator<Item = (i64, i64)>) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    for (k, ts) in events {
        let value = format!(r#"{{"k":{k},"ts":{ts}}}"#);
        producer
            .send(
                BaseRecord::<(), str>::to(topic)
                    .payload(&value)
                    .partition(0),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

#[test]
fn the_worker_rides_out_a_broker_outage() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("in", 1, 1).unwrap();
    cluster.create_topic("out", 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let dir = std::env::temp_dir().join(format!("oxbow-outage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = format!(
        r#"
apiVersion: oxbow.dev/v1alpha1
kind: StreamJob
metadata: {{name: outage}}
spec:
  kafka: {{bootstrapServers: "{bootstrap}"}}
  source: {{topics: [in], eventTime: {{field: ts}}, partitionedBy: "k"}}
  pipeline:
    - keyBy: "k"
    - window: {{tumbling: 1s}}
      aggregate: {{n: "count()"}}
  sink: {{topic: out, deliveryGuarantee: at-least-once}}
  checkpoint: {{storage: "file://{}", interval: 1h}}
"#,
        dir.display()
    );
    let spec = oxbow_crds::parse_manifest(&yaml).unwrap().spec;
    let job = JobFile::new(
        "test",
        "outage",
        1,
        spec,
        assign(&BTreeMap::from([("in".to_owned(), 1)]), 1, None),
        Restore::LatestCheckpoint,
    );
    let mut worker = Worker::start(WorkerConfig {
        job,
        ordinal: 0,
        bootstrap: None,
        kafka_timeout: Duration::from_secs(30),
    })
    .unwrap();
    let base = 1_000
        * (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64);

    // Two seconds of events, then the broker goes away while the worker keeps polling.
    produce(&bootstrap, "in", (0..200).map(|i| (i % 4, base + i * 10)));
    let poll_for = |worker: &mut Worker, d: Duration| {
        let until = Instant::now() + d;
        while Instant::now() < until {
            worker.poll_once(Duration::from_millis(50)).unwrap();
        }
    };
    poll_for(&mut worker, Duration::from_secs(2));
    cluster.broker_down(1).unwrap();
    poll_for(&mut worker, Duration::from_secs(3));
    cluster.broker_up(1).unwrap();
    // Back: more input, closing the windows; the checkpoint flushes everything.
    produce(&bootstrap, "in", (0..4).map(|k| (k, base + 5_000)));
    let deadline = Instant::now() + Duration::from_secs(60);
    while worker.records_in() < 204 {
        assert!(
            Instant::now() < deadline,
            "consumed {} of 204 after the outage",
            worker.records_in()
        );
        worker.poll_once(Duration::from_millis(50)).unwrap();
    }
    worker.checkpoint().unwrap();

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "outage-check")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["out"]).unwrap();
    let mut rows = BTreeSet::new();
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until && rows.len() < 8 {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let row: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            rows.insert((
                row["k"].as_i64().unwrap(),
                row["window_start"].as_i64().unwrap() - base,
                row["n"].as_i64().unwrap(),
            ));
        }
    }
    // Keys 0..4 in windows [0, 1000) and [1000, 2000), 25 events each.
    let want: BTreeSet<_> = (0..4).flat_map(|k| [(k, 0, 25), (k, 1000, 25)]).collect();
    assert_eq!(rows, want);
    std::fs::remove_dir_all(&dir).ok();
}
