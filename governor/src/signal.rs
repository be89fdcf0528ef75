//! Signals: what the governor measures, how a signal is named, and its health over time.
//!
//! A signal is named in policies and metrics as `redis:NAME` (the memory use of the Redis
//! endpoint `NAME`, as a fraction of its capacity) or `kafka:GROUP/TOPIC` (the consumer lag
//! of `GROUP` on `TOPIC`, in messages).

use std::collections::BTreeMap;
use std::fmt;

use crate::clock::Millis;

/// Longest Redis endpoint name.
pub const MAX_NAME_LEN: usize = 64;
/// Longest Kafka consumer group id accepted in a signal name.
pub const MAX_GROUP_LEN: usize = 255;
/// Longest Kafka topic name (Kafka's own limit).
pub const MAX_TOPIC_LEN: usize = 249;

/// What a signal measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SignalKind {
    /// Redis `used_memory` / capacity, a fraction (0.8 = 80 %).
    RedisMemory,
    /// Kafka consumer-group lag: Σ over partitions of (log-end offset − committed offset).
    KafkaLag,
}

/// The identity of one signal.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SignalId {
    /// Memory use of the named Redis endpoint.
    Redis {
        /// The endpoint's name in `defaults.yaml` `redis:`.
        name: String,
    },
    /// Lag of a consumer group on a topic, on the configured Kafka brokers.
    Kafka {
        /// Consumer group id.
        group: String,
        /// Topic name.
        topic: String,
    },
}

/// Why a signal name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignalNameError {
    /// Neither `redis:` nor `kafka:`.
    #[error("`{0}` is not a signal: expected `redis:NAME` or `kafka:GROUP/TOPIC`")]
    UnknownKind(String),
    /// A malformed `redis:NAME`.
    #[error("`{0}`: a Redis endpoint name is 1-64 characters of [A-Za-z0-9._-]")]
    BadRedisName(String),
    /// A malformed `kafka:GROUP/TOPIC`.
    #[error("`{0}`: expected `kafka:GROUP/TOPIC` with a group of 1-255 printable characters and a topic of 1-249 characters of [A-Za-z0-9._-]")]
    BadKafka(String),
}

/// True for 1–`max` characters of `[A-Za-z0-9._-]`.
pub fn is_plain_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

impl SignalId {
    /// Parses `redis:NAME` or `kafka:GROUP/TOPIC`.
    pub fn parse(s: &str) -> Result<Self, SignalNameError> {
        if let Some(name) = s.strip_prefix("redis:") {
            if !is_plain_name(name, MAX_NAME_LEN) {
                return Err(SignalNameError::BadRedisName(s.to_string()));
            }
            return Ok(Self::Redis {
                name: name.to_string(),
            });
        }
        if let Some(rest) = s.strip_prefix("kafka:") {
            let bad = || SignalNameError::BadKafka(s.to_string());
            // Topics cannot contain '/', so the last '/' separates group and topic.
            let (group, topic) = rest.rsplit_once('/').ok_or_else(bad)?;
            let group_ok = !group.is_empty()
                && group.len() <= MAX_GROUP_LEN
                && group.chars().all(|c| !c.is_control());
            if !group_ok || !is_plain_name(topic, MAX_TOPIC_LEN) {
                return Err(bad());
            }
            return Ok(Self::Kafka {
                group: group.to_string(),
                topic: topic.to_string(),
            });
        }
        Err(SignalNameError::UnknownKind(s.to_string()))
    }

    /// What the signal measures.
    pub fn kind(&self) -> SignalKind {
        match self {
            Self::Redis { .. } => SignalKind::RedisMemory,
            Self::Kafka { .. } => SignalKind::KafkaLag,
        }
    }
}

impl fmt::Display for SignalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Redis { name } => write!(f, "redis:{name}"),
            Self::Kafka { group, topic } => write!(f, "kafka:{group}/{topic}"),
        }
    }
}

/// A signal as the control law sees it at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SignalStatus {
    /// A value read recently enough to act on.
    Fresh(f64),
    /// Bound less than `stale_after_s` ago and not read successfully yet (the start-up
    /// grace): the law holds the ratio, and `on_stale` does not apply yet.
    Pending,
    /// No successful read within `stale_after_s`.
    Stale,
}

/// The signals the law sees at one tick. A bound signal missing here counts as stale.
pub type Signals = BTreeMap<SignalId, SignalStatus>;

/// Why the latest read of a signal failed, as a bounded label (`cause` of
/// `huntgate_signal_error_cause`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorCause {
    /// The endpoint could not be reached, or the connection was lost.
    Connect,
    /// The read did not finish within `read_timeout_ms`.
    Timeout,
    /// The endpoint answered, but not with what was needed (e.g. no such topic).
    Protocol,
    /// The signal's configuration cannot work (e.g. `maxmemory 0` and no `capacity_bytes`).
    Config,
    /// The source returned a value that is not a finite number.
    BadValue,
}

impl ErrorCause {
    /// Every cause, in the order metrics list them.
    pub const ALL: [ErrorCause; 5] = [
        ErrorCause::Connect,
        ErrorCause::Timeout,
        ErrorCause::Protocol,
        ErrorCause::Config,
        ErrorCause::BadValue,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCause::Connect => "connect",
            ErrorCause::Timeout => "timeout",
            ErrorCause::Protocol => "protocol",
            ErrorCause::Config => "config",
            ErrorCause::BadValue => "bad_value",
        }
    }
}

/// One failed read: its cause class and the (redacted, truncated) message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadError {
    /// The class of the failure.
    pub cause: ErrorCause,
    /// What happened, for logs.
    pub message: String,
}

impl ReadError {
    /// An error of `cause` with `message`.
    pub fn new(cause: ErrorCause, message: impl Into<String>) -> Self {
        Self {
            cause,
            message: message.into(),
        }
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// One signal's read history.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SignalHealth {
    /// The last value read successfully.
    pub last_value: Option<f64>,
    /// When it was read.
    pub last_ok_ms: Option<Millis>,
    /// When the signal was bound (governor start, or the reload that bound it): a signal
    /// never read is stale only `stale_after_s` after this (the start-up grace).
    pub bound_ms: Millis,
    /// Whether the latest read succeeded.
    pub up: bool,
    /// The latest read error, if the latest read failed.
    pub last_error: Option<ReadError>,
    /// Failed reads since the governor started.
    pub errors_total: u64,
}

impl SignalHealth {
    /// Milliseconds since the last good read, or since the signal was bound if it was never
    /// read.
    pub fn age_ms(&self, now: Millis) -> Millis {
        now.saturating_sub(self.last_ok_ms.unwrap_or(self.bound_ms))
    }

    /// Whether the signal is stale at `now`: no good read for longer than `stale_after_ms`
    /// (a signal never read counts from when it was bound).
    pub fn is_stale(&self, now: Millis, stale_after_ms: Millis) -> bool {
        self.age_ms(now) > stale_after_ms
    }

    /// The status the law sees.
    pub fn status(&self, now: Millis, stale_after_ms: Millis) -> SignalStatus {
        match self.last_value {
            _ if self.is_stale(now, stale_after_ms) => SignalStatus::Stale,
            Some(v) => SignalStatus::Fresh(v),
            None => SignalStatus::Pending,
        }
    }
}

/// Read history of every signal (pure bookkeeping; the readers live in `sources`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SignalBook {
    entries: BTreeMap<SignalId, SignalHealth>,
}

impl SignalBook {
    /// Tracks every signal of `bound` (new ones as bound at `now`) and forgets the others.
    pub fn bind(&mut self, bound: &std::collections::BTreeSet<SignalId>, now: Millis) {
        self.retain(bound);
        for id in bound {
            self.entries
                .entry(id.clone())
                .or_insert_with(|| SignalHealth {
                    bound_ms: now,
                    ..SignalHealth::default()
                });
        }
    }

    /// Records one read: a value, or the error that prevented it.
    pub fn record(&mut self, id: &SignalId, read: Result<f64, ReadError>, now: Millis) {
        let entry = self
            .entries
            .entry(id.clone())
            .or_insert_with(|| SignalHealth {
                bound_ms: now,
                ..SignalHealth::default()
            });
        match read {
            Ok(v) if v.is_finite() => {
                entry.last_value = Some(v);
                entry.last_ok_ms = Some(now);
                entry.up = true;
                entry.last_error = None;
            }
            Ok(v) => {
                entry.up = false;
                entry.errors_total = entry.errors_total.saturating_add(1);
                entry.last_error = Some(ReadError::new(
                    ErrorCause::BadValue,
                    format!("non-finite value {v}"),
                ));
            }
            Err(e) => {
                entry.up = false;
                entry.errors_total = entry.errors_total.saturating_add(1);
                entry.last_error = Some(e);
            }
        }
    }

    /// Keeps only the given signals (after a policy change).
    pub fn retain(&mut self, keep: &std::collections::BTreeSet<SignalId>) {
        self.entries.retain(|id, _| keep.contains(id));
    }

    /// The statuses the law sees at `now`.
    pub fn statuses(&self, now: Millis, stale_after_ms: Millis) -> Signals {
        self.entries
            .iter()
            .map(|(id, h)| (id.clone(), h.status(now, stale_after_ms)))
            .collect()
    }

    /// Every tracked signal and its health.
    pub fn iter(&self) -> impl Iterator<Item = (&SignalId, &SignalHealth)> {
        self.entries.iter()
    }

    /// One signal's health.
    pub fn get(&self, id: &SignalId) -> Option<&SignalHealth> {
        self.entries.get(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_signal_names() {
        let r = SignalId::parse("redis:main").unwrap();
        assert_eq!(r.to_string(), "redis:main");
        assert_eq!(r.kind(), SignalKind::RedisMemory);
        let k = SignalId::parse("kafka:team/a/hunt-001.events").unwrap();
        assert_eq!(
            k,
            SignalId::Kafka {
                group: "team/a".into(),
                topic: "hunt-001.events".into()
            }
        );
        assert_eq!(k.to_string(), "kafka:team/a/hunt-001.events");
        for bad in [
            "redis:",
            "redis:a b",
            "kafka:g",
            "kafka:/t",
            "kafka:g/",
            "kafka:g/t t",
            "mysql:x",
            "",
        ] {
            assert!(SignalId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_signal_goes_stale_after_stale_after() {
        let id = SignalId::parse("redis:main").unwrap();
        let mut book = SignalBook::default();
        assert_eq!(book.statuses(0, 15_000).get(&id), None);
        book.record(&id, Ok(0.5), 1_000);
        book.record(
            &id,
            Err(ReadError::new(ErrorCause::Connect, "connection refused")),
            6_000,
        );
        let h = book.get(&id).unwrap();
        assert!(!h.up);
        assert_eq!(h.errors_total, 1);
        // The last good value still counts until stale_after has passed.
        assert_eq!(h.status(16_000, 15_000), SignalStatus::Fresh(0.5));
        assert_eq!(h.status(16_001, 15_000), SignalStatus::Stale);
        book.record(&id, Ok(f64::NAN), 17_000);
        assert_eq!(book.get(&id).unwrap().last_value, Some(0.5));
        book.record(&id, Ok(0.25), 18_000);
        assert_eq!(
            book.statuses(18_000, 15_000).get(&id),
            Some(&SignalStatus::Fresh(0.25))
        );
    }
}

#[cfg(test)]
mod grace_tests {
    use super::*;

    /// Issue 11, defect 5: a signal never read was stale at the first evaluation (55 ms after
    /// start), so `on_stale: overloaded` cut at once. It is pending for `stale_after_s`.
    #[test]
    fn never_read_signal_gets_startup_grace() {
        let id = SignalId::parse("redis:main").unwrap();
        let mut book = SignalBook::default();
        book.bind(&[id.clone()].into_iter().collect(), 1_000);
        let refused = || Err(ReadError::new(ErrorCause::Connect, "connection refused"));
        book.record(&id, refused(), 1_055);
        assert_eq!(book.statuses(1_055, 15_000)[&id], SignalStatus::Pending);
        assert!(!book.get(&id).unwrap().is_stale(16_000, 15_000));
        assert_eq!(book.get(&id).unwrap().age_ms(16_000), 15_000);
        assert_eq!(book.statuses(16_000, 15_000)[&id], SignalStatus::Pending);
        assert_eq!(book.statuses(16_001, 15_000)[&id], SignalStatus::Stale);
        // A signal bound by a later reload gets its own grace.
        let other = SignalId::parse("redis:other").unwrap();
        book.bind(&[id.clone(), other.clone()].into_iter().collect(), 20_000);
        assert_eq!(book.statuses(20_000, 15_000)[&other], SignalStatus::Pending);
        assert_eq!(book.statuses(20_000, 15_000)[&id], SignalStatus::Stale);
    }
}
