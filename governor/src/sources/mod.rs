//! Signal readers: the adapters between the pure governor and real Redis / Kafka.
//!
//! Each bound signal gets one [`SignalSource`]; [`SourceSet`] keeps them in step with the
//! policy (rebuilding a source only when its endpoint changed) and reads them all
//! concurrently, each under the policy's `read_timeout_ms`.

pub mod kafka;
pub mod redis;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;

use crate::policy::Policy;
use crate::signal::{ErrorCause, ReadError, SignalId};
use crate::text::sanitize;

/// A boxed read in flight.
pub type ReadFuture<'a> = Pin<Box<dyn Future<Output = Result<f64, SourceError>> + Send + 'a>>;

/// Reads one signal's current value.
pub trait SignalSource: Send + Sync {
    /// Reads the value (memory fraction, or lag in messages).
    fn read(&self) -> ReadFuture<'_>;
}

/// Why a read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The endpoint could not be reached.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The read did not finish in time.
    #[error("timed out after {0} ms")]
    Timeout(u64),
    /// The endpoint answered, but not with what was needed.
    #[error("bad answer: {0}")]
    Protocol(String),
    /// The signal's configuration cannot work (e.g. maxmemory 0 and no capacity_bytes).
    #[error("misconfigured: {0}")]
    Config(String),
}

impl SourceError {
    /// Whether retrying later may succeed without a policy change.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Connect(_) | Self::Timeout(_) | Self::Protocol(_)
        )
    }
}

impl SourceError {
    /// The bounded cause label of this error.
    pub fn cause(&self) -> ErrorCause {
        match self {
            Self::Connect(_) => ErrorCause::Connect,
            Self::Timeout(_) => ErrorCause::Timeout,
            Self::Protocol(_) => ErrorCause::Protocol,
            Self::Config(_) => ErrorCause::Config,
        }
    }
}

impl From<SourceError> for ReadError {
    /// Keeps the cause; the message is redacted (credentials in URLs) and truncated.
    fn from(e: SourceError) -> Self {
        ReadError::new(e.cause(), sanitize(&e.to_string()))
    }
}

/// Builds sources for signals.
pub trait SourceFactory: Send + Sync {
    /// A reader for `id` under `policy`.
    fn build(&self, id: &SignalId, policy: &Policy) -> Result<Arc<dyn SignalSource>, SourceError>;
}

/// The factory of real readers: Redis `INFO memory` and Kafka ListOffsets + OffsetFetch.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealSources;

impl SourceFactory for RealSources {
    fn build(&self, id: &SignalId, policy: &Policy) -> Result<Arc<dyn SignalSource>, SourceError> {
        let timeout = Duration::from_millis(policy.read_timeout_ms);
        match id {
            SignalId::Redis { name } => {
                let endpoint = policy
                    .redis
                    .get(name)
                    .ok_or_else(|| SourceError::Config(format!("no Redis endpoint `{name}`")))?;
                Ok(Arc::new(redis::RedisMemorySource::new(
                    &endpoint.url,
                    endpoint.capacity_bytes,
                )?))
            }
            SignalId::Kafka { group, topic } => {
                let cluster = policy
                    .kafka
                    .as_ref()
                    .ok_or_else(|| SourceError::Config("no Kafka brokers configured".into()))?;
                Ok(Arc::new(kafka::KafkaLagSource::new(
                    &cluster.brokers,
                    group,
                    topic,
                    timeout,
                )?))
            }
        }
    }
}

/// What a source depends on in the policy: when it changes, the source is rebuilt.
fn endpoint_key(id: &SignalId, policy: &Policy) -> String {
    match id {
        SignalId::Redis { name } => match policy.redis.get(name) {
            Some(e) => format!("{}|{:?}", e.url, e.capacity_bytes),
            None => String::new(),
        },
        SignalId::Kafka { .. } => format!(
            "{}|{}",
            policy.kafka.as_ref().map_or("", |k| k.brokers.as_str()),
            policy.read_timeout_ms
        ),
    }
}

struct Entry {
    key: String,
    source: Result<Arc<dyn SignalSource>, SourceError>,
}

/// One source per bound signal.
#[derive(Default)]
pub struct SourceSet {
    entries: BTreeMap<SignalId, Entry>,
}

impl std::fmt::Debug for SourceSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.entries.keys()).finish()
    }
}

impl SourceSet {
    /// Brings the set in line with `policy`: drops unbound signals, builds new ones and
    /// rebuilds those whose endpoint changed.
    pub fn sync(&mut self, policy: &Policy, factory: &dyn SourceFactory) {
        let bound = policy.bound_signals();
        self.entries.retain(|id, _| bound.contains(id));
        for id in bound {
            let key = endpoint_key(&id, policy);
            if self.entries.get(&id).is_some_and(|e| e.key == key) {
                continue;
            }
            let source = factory.build(&id, policy);
            self.entries.insert(id, Entry { key, source });
        }
    }

    /// Reads every source concurrently, each within `timeout_ms`.
    pub async fn read_all(&self, timeout_ms: u64) -> Vec<(SignalId, Result<f64, ReadError>)> {
        let reads = self.entries.iter().map(|(id, entry)| async move {
            let result = match &entry.source {
                Ok(source) => {
                    match tokio::time::timeout(Duration::from_millis(timeout_ms), source.read())
                        .await
                    {
                        Ok(r) => r,
                        Err(_) => Err(SourceError::Timeout(timeout_ms)),
                    }
                }
                Err(e) => Err(e.clone()),
            };
            (id.clone(), result.map_err(ReadError::from))
        });
        join_all(reads).await
    }
}
