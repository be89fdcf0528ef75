//! Integration with a real Kafka-protocol broker (tansu, sqlite storage): lag is read
//! exactly over the Kafka protocol and drives the ratio; a dead broker makes the signal stale.

// Test helpers outside #[test] functions unwrap and panic too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use huntgate_governor::clock::{secs, Millis};
use huntgate_governor::governor::Governor;
use huntgate_governor::law::Reason;
use huntgate_governor::policy::compile::load_dir;
use huntgate_governor::policy::Overrides;
use huntgate_governor::signal::SignalId;
use huntgate_governor::sources::kafka::KafkaLagSource;
use huntgate_governor::sources::{RealSources, SignalSource};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use support::{write, Tansu};

const T0: Millis = 1_800_000_000_000;
const TOPIC: &str = "hunt-001-events";
const GROUP: &str = "hunt-001-scorers";

async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap();
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
    }
}

/// Produces `counts[p]` messages to partition p and waits for every acknowledgement.
fn produce(brokers: &str, topic: &str, counts: &[usize]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for (p, n) in counts.iter().enumerate() {
        for i in 0..*n {
            let payload = format!("hunter-event-{p}-{i}");
            let mut record = BaseRecord::<str, str>::to(topic)
                .partition(i32::try_from(p).unwrap())
                .payload(&payload);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((e, r)) => {
                        // Local queue full: serve delivery reports and retry.
                        assert!(
                            matches!(
                                e,
                                rdkafka::error::KafkaError::MessageProduction(
                                    rdkafka::types::RDKafkaErrorCode::QueueFull
                                )
                            ),
                            "{e}"
                        );
                        record = r;
                        producer.poll(Duration::from_millis(10));
                    }
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(producer.in_flight_count(), 0);
}

/// Commits offsets for `group` (a consumer that processed `offsets[p]` messages of partition p).
fn commit(brokers: &str, group: &str, topic: &str, offsets: &[i64]) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for (p, o) in offsets.iter().enumerate() {
        tpl.add_partition_offset(topic, i32::try_from(p).unwrap(), Offset::Offset(*o))
            .unwrap();
    }
    consumer.commit(&tpl, CommitMode::Sync).unwrap();
}

async fn read_lag(source: &KafkaLagSource) -> f64 {
    source.read().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_kafka_lag_is_exact_drives_the_ratio_goes_stale_and_comes_back() {
    let mut broker = Tansu::start();
    create_topic(&broker.brokers, TOPIC, 3).await;
    let produced = [500, 400, 300];
    let brokers = broker.brokers.clone();
    tokio::task::spawn_blocking(move || produce(&brokers, TOPIC, &produced))
        .await
        .unwrap();
    let n: i64 = 1200;
    let first_commit = [50, 100, 0];
    let m: i64 = first_commit.iter().sum();
    let brokers = broker.brokers.clone();
    tokio::task::spawn_blocking(move || commit(&brokers, GROUP, TOPIC, &first_commit))
        .await
        .unwrap();

    // The reader on its own: exactly N − M.
    let source =
        KafkaLagSource::new(&broker.brokers, GROUP, TOPIC, Duration::from_secs(5)).unwrap();
    assert_eq!(read_lag(&source).await, (n - m) as f64);
    // A group that never committed counts every retained message.
    let fresh =
        KafkaLagSource::new(&broker.brokers, "nobody", TOPIC, Duration::from_secs(5)).unwrap();
    assert_eq!(read_lag(&fresh).await, n as f64);
    // An unknown topic is an error, not a lag of 0.
    let missing = KafkaLagSource::new(
        &broker.brokers,
        GROUP,
        "no-such-topic",
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(missing.read().await.is_err());

    // Through the governor: lag 1050 > 1000 → cut on schedule.
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "defaults.yaml",
        "stale_after_s: 15\nread_timeout_ms: 1000\nkafka: {brokers: '127.0.0.1:1'}\n",
    );
    write(
        dir.path(),
        "hunts/hunt-001.yaml",
        &format!("max_hunters: 50000\nsignals: ['kafka:{GROUP}/{TOPIC}']\n"),
    );
    let overrides = Overrides {
        redis: vec![],
        kafka_brokers: Some(broker.brokers.clone()),
    };
    let policy = load_dir(dir.path(), &overrides).unwrap();
    let mut g = Governor::new(policy, Arc::new(RealSources), 1, T0);
    let id = SignalId::parse(&format!("kafka:{GROUP}/{TOPIC}")).unwrap();
    let entry = |g: &Governor| {
        let e = g.document().hunts["hunt-001"];
        (e.ratio, e.reason)
    };
    g.evaluate(T0).await;
    assert_eq!(g.signals().get(&id).unwrap().last_value, Some(1050.0));
    assert_eq!(entry(&g), (0.9, Reason::KafkaLag));
    g.evaluate(T0 + secs(25)).await;
    assert_eq!(entry(&g), (0.9, Reason::KafkaLag));
    g.evaluate(T0 + secs(30)).await;
    assert_eq!(entry(&g), (0.8, Reason::KafkaLag));
    assert_eq!(g.document().hunts["hunt-001"].limit, 40_000);

    // The consumers catch up: lag 40 < 500 → calm (recovery waits its stable period).
    let caught_up = [480, 390, 290];
    let brokers = broker.brokers.clone();
    tokio::task::spawn_blocking(move || commit(&brokers, GROUP, TOPIC, &caught_up))
        .await
        .unwrap();
    assert_eq!(read_lag(&source).await, 40.0);
    g.evaluate(T0 + secs(35)).await;
    assert_eq!(g.signals().get(&id).unwrap().last_value, Some(40.0));
    assert_eq!(entry(&g), (0.8, Reason::Recovering));

    // Kill the broker: reads fail at once or within read_timeout_ms, the last value serves
    // for stale_after_s, then the signal is stale and the ratio holds.
    broker.kill();
    g.evaluate(T0 + secs(40)).await;
    let h = g.signals().get(&id).unwrap();
    assert!(!h.up, "{h:?}");
    assert_eq!(entry(&g), (0.8, Reason::Recovering));
    g.evaluate(T0 + secs(55)).await;
    assert_eq!(entry(&g), (0.8, Reason::SignalStale));
    g.evaluate(T0 + secs(120)).await;
    assert_eq!(
        entry(&g),
        (0.8, Reason::SignalStale),
        "no recovery on a stale signal"
    );
    let snap = g.subscribe().borrow().clone();
    let report = snap.signals.iter().find(|r| r.id == id).unwrap();
    assert!(report.stale && !report.health.up);
    assert!(report.health.errors_total >= 3);

    // The broker back on the same port and storage: the reader reconnects by itself (no
    // restart of the governor), the lag is the same 40, the stale reason goes.
    broker.restart();
    // Each evaluation waits at most read_timeout_ms: 60 of them bound the wait.
    let mut t = 125;
    for _ in 0..60 {
        t += 5;
        g.evaluate(T0 + secs(t)).await;
        if g.signals().get(&id).unwrap().up {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(
        g.signals().get(&id).unwrap().up,
        "the broker's signal did not come back"
    );
    assert_eq!(g.signals().get(&id).unwrap().last_value, Some(40.0));
    assert_eq!(entry(&g), (0.8, Reason::Recovering));
}

/// Issue 11, defect 7, against a real broker: a Kafka signal moving from "unreachable
/// broker" to "topic does not exist" changes its exported cause (connect → protocol).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_cause_change_from_unreachable_to_missing_topic_is_exported() {
    let broker = Tansu::start();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "defaults.yaml",
        "read_timeout_ms: 1000\nkafka: {brokers: '127.0.0.1:1'}\n",
    );
    write(
        dir.path(),
        "hunts/hunt-001.yaml",
        "signals: ['kafka:nobody/no-such-topic']\n",
    );
    let dead = load_dir(dir.path(), &Overrides::default()).unwrap();
    let mut g = Governor::new(dead, Arc::new(RealSources), 1, T0);
    let cause = |g: &Governor| {
        let text = huntgate_governor::metrics::render(&g.subscribe().borrow());
        text.lines()
            .find(|l| l.starts_with("huntgate_signal_error_cause{"))
            .map(str::to_string)
    };
    g.evaluate(T0).await;
    let first = cause(&g).unwrap_or_default();
    assert!(
        first.starts_with(
            "huntgate_signal_error_cause{signal=\"kafka:nobody/no-such-topic\",cause="
        ) && (first.ends_with("cause=\"connect\"} 1") || first.ends_with("cause=\"timeout\"} 1")),
        "unreachable broker: {first}"
    );
    let live = Overrides {
        redis: vec![],
        kafka_brokers: Some(broker.brokers.clone()),
    };
    g.apply_reload(load_dir(dir.path(), &live), T0 + secs(5));
    g.evaluate(T0 + secs(5)).await;
    let now = cause(&g).unwrap_or_default();
    assert!(
        now.ends_with("cause=\"protocol\"} 1"),
        "topic does not exist: {now}"
    );
}
