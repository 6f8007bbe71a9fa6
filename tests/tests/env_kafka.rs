//! The test brokers speak the Kafka protocol as Oxbow needs it: noida-db with transactions,
//! read_committed filtering, transactional offset commits with metadata and zombie fencing;
//! Tansu as a second implementation; the librdkafka mock cluster with fault injection.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use oxbow_tests::{Wait, kafka, unique_name};
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    mocking::MockCluster,
    producer::{
        BaseRecord, DefaultProducerContext, FutureProducer, FutureRecord, Producer,
        ThreadedProducer,
    },
    util::Timeout,
};

fn transactional_producer(bootstrap: &str, id: &str) -> ThreadedProducer<DefaultProducerContext> {
    let producer: ThreadedProducer<DefaultProducerContext> = kafka::config(bootstrap)
        .set("transactional.id", id)
        .set("transaction.timeout.ms", "60000")
        .create()
        .unwrap();
    producer.init_transactions(Duration::from_secs(30)).unwrap();
    producer
}

fn send(producer: &ThreadedProducer<DefaultProducerContext>, topic: &str, value: &str) {
    producer
        .send(BaseRecord::<(), str>::to(topic).payload(value).partition(0))
        .map_err(|(e, _)| e)
        .unwrap();
}

/// Puts the committed offset `offset` (with `metadata`) of partition 0 of `topic` for the
/// group of `consumer` into `producer`'s open transaction.
fn send_offset(
    producer: &ThreadedProducer<DefaultProducerContext>,
    consumer: &BaseConsumer,
    topic: &str,
    offset: i64,
    metadata: Option<&str>,
) {
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset(topic, 0, Offset::Offset(offset))
        .unwrap();
    if let Some(metadata) = metadata {
        offsets
            .find_partition(topic, 0)
            .unwrap()
            .set_metadata(metadata);
    }
    let group = consumer.group_metadata().unwrap();
    producer
        .send_offsets_to_transaction(&offsets, &group, Duration::from_secs(30))
        .unwrap();
}

/// The values in partition 0 of `topic` a reader at `isolation` sees.
fn visible(bootstrap: &str, topic: &str, isolation: &str) -> Vec<String> {
    kafka::read_all(bootstrap, topic, 1, isolation, Duration::from_secs(3)).unwrap()
}

#[tokio::test]
async fn read_committed_hides_an_aborted_transaction() {
    let bootstrap = kafka::bootstrap();
    let topic = kafka::new_topic(&bootstrap, "txn", 1).await.unwrap();

    let producer = transactional_producer(&bootstrap, &unique_name("txn-producer"));
    producer.begin_transaction().unwrap();
    for i in 0..3 {
        send(&producer, &topic, &format!("committed-{i}"));
    }
    producer
        .commit_transaction(Duration::from_secs(30))
        .unwrap();
    producer.begin_transaction().unwrap();
    for i in 0..2 {
        send(&producer, &topic, &format!("aborted-{i}"));
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    producer.abort_transaction(Duration::from_secs(30)).unwrap();

    let committed = visible(&bootstrap, &topic, "read_committed");
    assert_eq!(committed, ["committed-0", "committed-1", "committed-2"]);
    let uncommitted = visible(&bootstrap, &topic, "read_uncommitted");
    assert_eq!(
        uncommitted
            .iter()
            .filter(|v| v.starts_with("aborted"))
            .count(),
        2,
        "the broker stored the aborted records: {uncommitted:?}"
    );
}

#[tokio::test]
async fn offsets_commit_with_metadata_inside_a_transaction_and_zombies_are_fenced() {
    let bootstrap = kafka::bootstrap();
    let topic = kafka::new_topic(&bootstrap, "eos", 1).await.unwrap();
    let group = unique_name("eos-group");
    let txn_id = unique_name("eos-worker");

    // A consumer that only uses assign(), as Oxbow workers do.
    let consumer: BaseConsumer = kafka::config(&bootstrap)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let zombie = transactional_producer(&bootstrap, &txn_id);
    zombie.begin_transaction().unwrap();
    send(&zombie, &topic, "output-1");
    send_offset(
        &zombie,
        &consumer,
        &topic,
        42,
        Some("oxbow1:state/t/0/snap"),
    );
    zombie.commit_transaction(Duration::from_secs(30)).unwrap();

    // A fresh consumer of the group reads the offset and its metadata back.
    let fresh: BaseConsumer = kafka::config(&bootstrap)
        .set("group.id", &group)
        .create()
        .unwrap();
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition(&topic, 0);
    let committed = fresh
        .committed_offsets(wanted, Duration::from_secs(10))
        .unwrap();
    let entry = committed.find_partition(&topic, 0).unwrap();
    assert_eq!(entry.offset(), Offset::Offset(42));
    assert_eq!(entry.metadata(), "oxbow1:state/t/0/snap");

    // A successor with the same transactional id fences the zombie.
    zombie.begin_transaction().unwrap();
    send(&zombie, &topic, "zombie-output");
    let successor = transactional_producer(&bootstrap, &txn_id);
    let fenced = zombie.commit_transaction(Duration::from_secs(30));
    assert!(fenced.is_err(), "the zombie's commit must fail once fenced");
    successor.begin_transaction().unwrap();
    send(&successor, &topic, "output-2");
    successor
        .commit_transaction(Duration::from_secs(30))
        .unwrap();
    let visible = visible(&bootstrap, &topic, "read_committed");
    assert_eq!(visible, ["output-1", "output-2"]);
}

#[tokio::test]
async fn a_fenced_zombies_open_transaction_is_aborted_and_earlier_commits_stay_visible() {
    let bootstrap = kafka::bootstrap();
    let topic = kafka::new_topic(&bootstrap, "fence", 1).await.unwrap();
    let txn_id = unique_name("fence-worker");

    let zombie = transactional_producer(&bootstrap, &txn_id);
    let consumer: BaseConsumer = kafka::config(&bootstrap)
        .set("group.id", unique_name("fence-group"))
        .create()
        .unwrap();
    zombie.begin_transaction().unwrap();
    send(&zombie, &topic, "committed-by-zombie");
    send_offset(&zombie, &consumer, &topic, 1, None);
    zombie.commit_transaction(Duration::from_secs(30)).unwrap();
    zombie.begin_transaction().unwrap();
    send(&zombie, &topic, "open-when-fenced");
    zombie.flush(Duration::from_secs(30)).unwrap(); // in the log, in an open transaction

    let successor = transactional_producer(&bootstrap, &txn_id);
    successor.begin_transaction().unwrap();
    send(&successor, &topic, "committed-by-successor");
    successor
        .commit_transaction(Duration::from_secs(30))
        .unwrap();
    drop(zombie);

    let visible = visible(&bootstrap, &topic, "read_committed");
    assert_eq!(visible, ["committed-by-zombie", "committed-by-successor"]);
}

#[tokio::test]
async fn the_second_broker_produces_and_consumes() {
    let Some(bootstrap) = kafka::second_bootstrap() else {
        panic!(
            "OXBOW_TEST_BOOTSTRAP_TANSU is not set; the suite runs the basic checks on a second broker"
        );
    };
    let topic = kafka::new_topic(&bootstrap, "tansu", 1).await.unwrap();
    let producer = kafka::producer(&bootstrap).unwrap();
    for i in 0..5 {
        kafka::send(&producer, &topic, 0, &format!("record-{i}"))
            .await
            .unwrap();
    }
    let values = visible(&bootstrap, &topic, "read_uncommitted");
    assert_eq!(
        values,
        (0..5).map(|i| format!("record-{i}")).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn the_mock_cluster_injects_a_broker_outage() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("faults", 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("message.timeout.ms", "30000")
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::<(), str>::to("faults").payload("before"),
            Timeout::After(Duration::from_secs(10)),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();

    cluster.broker_down(1).unwrap();
    let pending = producer.send(
        FutureRecord::<(), str>::to("faults").payload("during"),
        Timeout::After(Duration::from_secs(10)),
    );
    let mut pending = Box::pin(pending);
    let early = tokio::time::timeout(Duration::from_secs(2), &mut pending).await;
    assert!(
        early.is_err(),
        "nothing is delivered while the broker is down"
    );
    cluster.broker_up(1).unwrap();
    tokio::time::timeout(Duration::from_secs(30), pending)
        .await
        .unwrap()
        .map_err(|(e, _)| e)
        .unwrap();

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "faults-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["faults"]).unwrap();
    let mut values = Vec::new();
    let read = Wait::new("both records", Duration::from_secs(20))
        .every(Duration::ZERO)
        .until(async || {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                values.push(String::from_utf8_lossy(m.payload().unwrap()).into_owned());
            }
            (values.len() >= 2).then_some(())
        })
        .await;
    assert_eq!(values, ["before", "during"], "{read:?}");
}
