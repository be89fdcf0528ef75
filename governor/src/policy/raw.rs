//! The policy files as written by operators (serde, YAML). Every field is documented in
//! governor/README.md; [`super::compile`] validates and turns them into a [`super::Policy`].

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::law::OnStale;

/// An optional field that, when written, must have a value: `max_hunters:` with nothing
/// after it is an error ("no value"), not the default.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// `policies/defaults.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct RawDefaults {
    /// Seconds between evaluations of the control law (default 5).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub eval_period_s: Option<u64>,
    /// `ttl_s` of the throttle document (default 10): advice on how long a copy stays
    /// usable; the filter does not read it (its `governor.max_stale_s` decides).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl_s: Option<u64>,
    /// A signal with no successful read for longer than this is stale (default 15).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub stale_after_s: Option<u64>,
    /// Time limit of one signal read, in milliseconds (default 2000).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub read_timeout_ms: Option<u64>,
    /// max_hunters of hunts whose file does not set it (default 2000, the legacy cap).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_hunters: Option<u32>,
    /// min_hunters of hunts whose file does not set it (default 0).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub min_hunters: Option<u32>,
    /// Whether `default_ratio` (hunts without a file) follows the law over `signals`
    /// (default true); false keeps it at 1.0.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub govern_unlisted: Option<bool>,
    /// Signals that govern every hunt whose file has no `signals` of its own, and
    /// `default_ratio`: `redis:NAME` or `kafka:GROUP/TOPIC`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signals: Vec<String>,
    /// Redis endpoints by name (referenced as `redis:NAME`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub redis: BTreeMap<String, RawRedis>,
    /// The Kafka cluster whose consumer lag `kafka:GROUP/TOPIC` signals read.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub kafka: Option<RawKafka>,
    /// Control knobs for every hunt (each may be overridden per hunt).
    #[serde(default, skip_serializing_if = "RawControl::is_empty")]
    pub control: RawControl,
}

/// One Redis endpoint.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct RawRedis {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// Capacity in bytes used when the server's `maxmemory` is 0 (unlimited).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub capacity_bytes: Option<u64>,
}

/// The Kafka cluster.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct RawKafka {
    /// Bootstrap brokers, `host:port[,host:port…]`.
    pub brokers: String,
}

/// Control knobs; every field optional (unset fields inherit).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct RawControl {
    /// Ratio removed per cut, in (0, 1] (default 0.10 = 10 % of max_hunters).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub cut_step: Option<f64>,
    /// Least seconds between two cuts (default 30).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub cut_interval_s: Option<u64>,
    /// Ratio added per recovery step, in (0, 1] (default 0.05).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub recover_step: Option<f64>,
    /// Least seconds between two recovery steps (default 30).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub recover_interval_s: Option<u64>,
    /// Seconds every signal must stay calm before recovery starts (default 60).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub stable_period_s: Option<u64>,
    /// Lowest ratio the law sets, in [0, 1] (default 0.10).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub min_ratio: Option<f64>,
    /// Redis memory fraction above which a hunt is overloaded (default 0.80).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub redis_memory_high: Option<f64>,
    /// Redis memory fraction below which Redis is calm (default 0.70).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub redis_memory_low: Option<f64>,
    /// Kafka lag in messages above which a hunt is overloaded (default 1000).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub kafka_lag_high: Option<u64>,
    /// Kafka lag in messages below which Kafka is calm (default 500).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub kafka_lag_low: Option<u64>,
    /// What a stale signal does: `hold` (default) or `overloaded`.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub on_stale: Option<OnStale>,
}

impl RawControl {
    /// True when no knob is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// `policies/hunts/<hunt>.yaml`: one hunt's overrides. The hunt id is the file name.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct RawHunt {
    /// The hunt's full capacity (default: `max_hunters` of defaults.yaml).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_hunters: Option<u32>,
    /// Floor on the enforced limit, in hunters (default: defaults.yaml `min_hunters`).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub min_hunters: Option<u32>,
    /// Signals that govern this hunt, replacing defaults.yaml `signals`.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub signals: Option<Vec<String>>,
    /// Knob overrides for this hunt.
    #[serde(default, skip_serializing_if = "RawControl::is_empty")]
    pub control: RawControl,
    /// Operator pin: a fixed ratio in [0, 1] (reason `pinned`); remove it to hand back to the law.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub pin_ratio: Option<f64>,
}
