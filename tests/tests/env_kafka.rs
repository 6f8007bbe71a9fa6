//! The test brokers speak the Kafka protocol as Oxbow needs it: noida-db with transactions,
//! read_committed filtering, transactional offset commits with metadata and zombie fencing;
//! Tansu as a second implementation; the librdkafka mock cluster with fault injection.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use oxbow_tests::{kafka, unique_name};
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

#[tokio::test]
async fn read_committed_hides_an_aborted_transaction() {
    let bootstrap = kafka::bootstrap();
    let topic = unique_name("txn");
    kafka::create_topic(&bootstrap, &topic, 1).await.unwrap();

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

    let idle = Duration::from_secs(3);
    let committed = kafka::read_all(&bootstrap, &topic, 1, "read_committed", idle).unwrap();
    assert_eq!(committed, ["committed-0", "committed-1", "committed-2"]);
    let uncommitted = kafka::read_all(&bootstrap, &topic, 1, "read_uncommitted", idle).unwrap();
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
    let topic = unique_name("eos");
    kafka::create_topic(&bootstrap, &topic, 1).await.unwrap();
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
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset(&topic, 0, Offset::Offset(42))
        .unwrap();
    offsets
        .find_partition(&topic, 0)
        .unwrap()
        .set_metadata("oxbow1:state/t/0/snap");
    let metadata = consumer.group_metadata().unwrap();
    zombie
        .send_offsets_to_transaction(&offsets, &metadata, Duration::from_secs(30))
        .unwrap();
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
    let visible = kafka::read_all(
        &bootstrap,
        &topic,
        1,
        "read_committed",
        Duration::from_secs(3),
    )
    .unwrap();
    assert_eq!(visible, ["output-1", "output-2"]);
}

#[tokio::test]
async fn a_fenced_zombies_open_transaction_is_aborted_and_earlier_commits_stay_visible() {
    let bootstrap = kafka::bootstrap();
    let topic = unique_name("fence");
    kafka::create_topic(&bootstrap, &topic, 1).await.unwrap();
    let txn_id = unique_name("fence-worker");

    let zombie = transactional_producer(&bootstrap, &txn_id);
    let consumer: BaseConsumer = kafka::config(&bootstrap)
        .set("group.id", unique_name("fence-group"))
        .create()
        .unwrap();
    zombie.begin_transaction().unwrap();
    send(&zombie, &topic, "committed-by-zombie");
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset(&topic, 0, Offset::Offset(1))
        .unwrap();
    zombie
        .send_offsets_to_transaction(
            &offsets,
            &consumer.group_metadata().unwrap(),
            Duration::from_secs(30),
        )
        .unwrap();
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

    let visible = kafka::read_all(
        &bootstrap,
        &topic,
        1,
        "read_committed",
        Duration::from_secs(3),
    )
    .unwrap();
    assert_eq!(visible, ["committed-by-zombie", "committed-by-successor"]);
}

#[tokio::test]
async fn the_second_broker_produces_and_consumes() {
    let Some(bootstrap) = kafka::second_bootstrap() else {
        panic!(
            "OXBOW_TEST_BOOTSTRAP_TANSU is not set; the suite runs the basic checks on a second broker"
        );
    };
    let topic = unique_name("tansu");
    kafka::create_topic(&bootstrap, &topic, 1).await.unwrap();
    let producer: FutureProducer = kafka::config(&bootstrap).create().unwrap();
    for i in 0..5 {
        let value = format!("record-{i}");
        let record = FutureRecord::<(), str>::to(&topic)
            .payload(&value)
            .partition(0);
        producer
            .send(record, Timeout::After(Duration::from_secs(10)))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let values = kafka::read_all(
        &bootstrap,
        &topic,
        1,
        "read_uncommitted",
        Duration::from_secs(3),
    )
    .unwrap();
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
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while values.len() < 2 && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            values.push(String::from_utf8_lossy(m.payload().unwrap()).into_owned());
        }
    }
    assert_eq!(values, ["before", "during"]);
}
