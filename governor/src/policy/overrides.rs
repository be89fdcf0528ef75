//! Endpoint overrides from the command line or environment (`--redis`, `--kafka`), applied
//! to defaults.yaml on every load so a demo or test harness can point a shipped policy at
//! its own servers.

use std::str::FromStr;

use super::raw::{RawDefaults, RawKafka, RawRedis};
use crate::signal::{is_plain_name, MAX_NAME_LEN};

/// The endpoint name `--redis URL` creates when defaults.yaml has no Redis endpoint.
pub const DEFAULT_REDIS_NAME: &str = "main";

/// One `--redis [NAME=]URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOverride {
    /// The endpoint to change or add; `None` changes every endpoint (or adds `main`).
    pub name: Option<String>,
    /// The new URL.
    pub url: String,
}

impl FromStr for RedisOverride {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, url) = match s.split_once('=') {
            Some((name, url)) if !name.contains(':') => (Some(name.to_string()), url.to_string()),
            _ => (None, s.to_string()),
        };
        if let Some(n) = &name {
            if !is_plain_name(n, MAX_NAME_LEN) {
                return Err(format!("`{n}` is not an endpoint name"));
            }
        }
        if url.is_empty() {
            return Err("empty Redis URL".to_string());
        }
        Ok(Self { name, url })
    }
}

/// All overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--redis [NAME=]URL`, in order.
    pub redis: Vec<RedisOverride>,
    /// `--kafka BROKERS`: replaces (or adds) `kafka.brokers`.
    pub kafka_brokers: Option<String>,
}

impl Overrides {
    /// Applies the overrides to a parsed defaults.yaml; returns what they replaced, so an
    /// error in an overridden value names the flag, not defaults.yaml.
    pub fn apply(&self, raw: &mut RawDefaults) -> Applied {
        let mut applied = Applied::default();
        for o in &self.redis {
            match &o.name {
                Some(name) => {
                    raw.redis.entry(name.clone()).or_default().url = o.url.clone();
                    applied.redis.insert(name.clone());
                }
                None if raw.redis.is_empty() => {
                    applied.redis.insert(DEFAULT_REDIS_NAME.to_string());
                    raw.redis.insert(
                        DEFAULT_REDIS_NAME.to_string(),
                        RawRedis {
                            url: o.url.clone(),
                            capacity_bytes: None,
                        },
                    );
                }
                None => {
                    for (name, endpoint) in raw.redis.iter_mut() {
                        endpoint.url = o.url.clone();
                        applied.redis.insert(name.clone());
                    }
                }
            }
        }
        if let Some(brokers) = &self.kafka_brokers {
            raw.kafka = Some(RawKafka {
                brokers: brokers.clone(),
            });
            applied.kafka = true;
        }
        applied
    }
}

/// What [`Overrides::apply`] replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Redis endpoints whose URL came from `--redis`.
    pub redis: std::collections::BTreeSet<String>,
    /// Whether `kafka.brokers` came from `--kafka`.
    pub kafka: bool,
}
