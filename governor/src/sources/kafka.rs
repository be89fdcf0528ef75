//! Kafka consumer lag over the Kafka protocol (librdkafka, vendored): Metadata for the
//! partitions, OffsetFetch for the group's committed offsets, ListOffsets for the log-end
//! offsets. lag = Σ over partitions (log-end offset − committed offset).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::{ReadFuture, SignalSource, SourceError};

/// One partition's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// Log-start offset (low watermark).
    pub low: i64,
    /// Log-end offset (high watermark).
    pub high: i64,
    /// The group's committed offset, if it committed one.
    pub committed: Option<i64>,
}

/// Σ (high − committed); a partition the group never committed on counts everything it
/// still holds (high − low), as a consumer starting from the earliest offset would see it.
pub fn total_lag(partitions: &[PartitionOffsets]) -> u64 {
    partitions
        .iter()
        .map(|p| {
            let from = p.committed.unwrap_or(p.low);
            u64::try_from(p.high.saturating_sub(from)).unwrap_or(0)
        })
        .fold(0u64, u64::saturating_add)
}

/// Routes librdkafka's own logs and errors to `debug`: while a broker is down it reports
/// every reconnect attempt, and the governor already logs the signal going down once.
pub struct QuietContext;

impl ClientContext for QuietContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        tracing::debug!(?level, fac, "librdkafka: {log_message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(%error, "librdkafka: {reason}");
    }
}

impl ConsumerContext for QuietContext {}

type LagConsumer = BaseConsumer<QuietContext>;

/// Reads the lag of one consumer group on one topic.
pub struct KafkaLagSource {
    consumer: Arc<LagConsumer>,
    topic: String,
    timeout: Duration,
}

impl KafkaLagSource {
    /// A reader; the client connects in the background. Creating it joins no group: it
    /// only carries the group id for OffsetFetch.
    pub fn new(
        brokers: &str,
        group: &str,
        topic: &str,
        timeout: Duration,
    ) -> Result<Self, SourceError> {
        let consumer: LagConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("client.id", "huntgate-governor")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("socket.timeout.ms", timeout.as_millis().max(10).to_string())
            .set("reconnect.backoff.max.ms", "2000")
            .create_with_context(QuietContext)
            .map_err(|e| SourceError::Config(format!("Kafka client: {e}")))?;
        Ok(Self {
            consumer: Arc::new(consumer),
            topic: topic.to_string(),
            timeout,
        })
    }
}

fn lag_blocking(
    consumer: &LagConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<f64, SourceError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| SourceError::Connect(format!("metadata: {e}")))?;
    let topic_md = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| SourceError::Protocol(format!("no metadata for topic `{topic}`")))?;
    if let Some(err) = topic_md.error() {
        return Err(SourceError::Protocol(format!(
            "topic `{topic}`: {:?}",
            rdkafka::error::RDKafkaErrorCode::from(err)
        )));
    }
    if topic_md.partitions().is_empty() {
        return Err(SourceError::Protocol(format!(
            "topic `{topic}` has no partitions"
        )));
    }
    let mut tpl = TopicPartitionList::new();
    for p in topic_md.partitions() {
        tpl.add_partition(topic, p.id());
    }
    let committed = consumer
        .committed_offsets(tpl, timeout)
        .map_err(|e| SourceError::Connect(format!("committed offsets: {e}")))?;
    let mut offsets = Vec::with_capacity(topic_md.partitions().len());
    for p in topic_md.partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, p.id(), timeout)
            .map_err(|e| {
                SourceError::Connect(format!("watermarks of partition {}: {e}", p.id()))
            })?;
        let committed = match committed.find_partition(topic, p.id()).map(|e| e.offset()) {
            Some(Offset::Offset(o)) if o >= 0 => Some(o),
            _ => None,
        };
        offsets.push(PartitionOffsets {
            low,
            high,
            committed,
        });
    }
    // Drain client events (errors, logs) that would otherwise queue up.
    let _ = consumer.poll(Duration::ZERO);
    Ok(total_lag(&offsets) as f64)
}

impl SignalSource for KafkaLagSource {
    fn read(&self) -> ReadFuture<'_> {
        let consumer = Arc::clone(&self.consumer);
        let topic = self.topic.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            tokio::task::spawn_blocking(move || lag_blocking(&consumer, &topic, timeout))
                .await
                .map_err(|e| SourceError::Protocol(format!("reader task: {e}")))?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_sums_partitions() {
        let parts = [
            PartitionOffsets {
                low: 0,
                high: 10,
                committed: Some(4),
            },
            PartitionOffsets {
                low: 0,
                high: 7,
                committed: Some(7),
            },
            PartitionOffsets {
                low: 2,
                high: 5,
                committed: None,
            },
            // A committed offset past the end (after truncation) is no negative lag.
            PartitionOffsets {
                low: 0,
                high: 3,
                committed: Some(9),
            },
        ];
        // 6 + 0 + 3 + 0
        assert_eq!(total_lag(&parts), 9);
    }
}
