//! Parsing and validating policy files into a [`Policy`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::de::DeserializeOwned;

use super::overrides::Overrides;
use super::raw::{RawControl, RawDefaults, RawHunt};
use super::tree::{PolicyFile, PolicyTree};
use super::{
    KafkaCluster, Policy, PolicyError, RedisEndpoint, DEFAULT_EVAL_PERIOD_S, DEFAULT_MAX_HUNTERS,
    DEFAULT_READ_TIMEOUT_MS, DEFAULT_STALE_AFTER_S, DEFAULT_TTL_S, MAX_HUNTS, MAX_SIGNALS,
};
use crate::clock::secs;
use crate::law::{HuntSpec, Knobs};
use crate::signal::{is_plain_name, SignalId, MAX_NAME_LEN};

/// Longest accepted duration field, in seconds (one day).
const MAX_SECONDS: u64 = 86_400;

/// Parses one YAML file into `T`, naming the field on error. An empty file is `{}`.
pub fn parse_yaml<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, PolicyError> {
    let empty = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text)
        .map(|v| v.is_null())
        .unwrap_or(false);
    let text = if empty { "{}" } else { text };
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let problem = e.into_inner().to_string();
        if field == "." || field.is_empty() {
            PolicyError::File {
                file: file.to_path_buf(),
                problem,
            }
        } else {
            PolicyError::Field {
                file: file.to_path_buf(),
                field,
                problem,
            }
        }
    })
}

/// Field checks for one file.
struct Check<'a> {
    file: &'a Path,
}

impl Check<'_> {
    fn err(&self, field: impl Into<String>, problem: impl Into<String>) -> PolicyError {
        PolicyError::Field {
            file: self.file.to_path_buf(),
            field: field.into(),
            problem: problem.into(),
        }
    }

    fn seconds(&self, field: &str, v: u64, min: u64) -> Result<u64, PolicyError> {
        if v < min || v > MAX_SECONDS {
            return Err(self.err(
                field,
                format!("{v} is outside [{min}, {MAX_SECONDS}] seconds"),
            ));
        }
        Ok(v)
    }

    fn fraction(&self, field: &str, v: f64, zero_ok: bool) -> Result<f64, PolicyError> {
        let ok = v.is_finite() && v <= 1.0 && (v > 0.0 || (zero_ok && v == 0.0));
        if !ok {
            let range = if zero_ok { "[0, 1]" } else { "(0, 1]" };
            return Err(self.err(field, format!("{v} is outside {range}")));
        }
        Ok(v)
    }

    fn signal(
        &self,
        field: &str,
        s: &str,
        defaults: &RawDefaults,
    ) -> Result<SignalId, PolicyError> {
        let id = SignalId::parse(s).map_err(|e| self.err(field, e.to_string()))?;
        match &id {
            SignalId::Redis { name } if !defaults.redis.contains_key(name) => {
                let known: Vec<&str> = defaults.redis.keys().map(String::as_str).collect();
                Err(self.err(
                    field,
                    format!(
                        "no Redis endpoint `{name}` in defaults.yaml `redis:` (defined: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                ))
            }
            SignalId::Kafka { .. } if defaults.kafka.is_none() => Err(self.err(
                field,
                "a kafka: signal needs `kafka: {brokers: ...}` in defaults.yaml",
            )),
            _ => Ok(id),
        }
    }

    fn signals(
        &self,
        field: &str,
        list: &[String],
        defaults: &RawDefaults,
    ) -> Result<Vec<SignalId>, PolicyError> {
        let mut out: Vec<SignalId> = Vec::new();
        for (i, s) in list.iter().enumerate() {
            let id = self.signal(&format!("{field}[{i}]"), s, defaults)?;
            if !out.contains(&id) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Applies `raw` over `base` and validates the result.
    fn knobs(&self, base: &Knobs, raw: &RawControl) -> Result<Knobs, PolicyError> {
        let mut k = *base;
        if let Some(v) = raw.cut_step {
            k.cut_step = self.fraction("control.cut_step", v, false)?;
        }
        if let Some(v) = raw.cut_interval_s {
            k.cut_interval_ms = secs(self.seconds("control.cut_interval_s", v, 0)?);
        }
        if let Some(v) = raw.recover_step {
            k.recover_step = self.fraction("control.recover_step", v, false)?;
        }
        if let Some(v) = raw.recover_interval_s {
            k.recover_interval_ms = secs(self.seconds("control.recover_interval_s", v, 0)?);
        }
        if let Some(v) = raw.stable_period_s {
            k.stable_period_ms = secs(self.seconds("control.stable_period_s", v, 0)?);
        }
        if let Some(v) = raw.min_ratio {
            k.min_ratio = self.fraction("control.min_ratio", v, true)?;
        }
        if let Some(v) = raw.redis_memory_high {
            if !(v.is_finite() && v > 0.0) {
                return Err(self.err(
                    "control.redis_memory_high",
                    format!("{v} must be a fraction > 0"),
                ));
            }
            k.redis_memory_high = v;
        }
        if let Some(v) = raw.redis_memory_low {
            if !(v.is_finite() && v >= 0.0) {
                return Err(self.err(
                    "control.redis_memory_low",
                    format!("{v} must be a fraction >= 0"),
                ));
            }
            k.redis_memory_low = v;
        }
        if let Some(v) = raw.kafka_lag_high {
            k.kafka_lag_high = v as f64;
        }
        if let Some(v) = raw.kafka_lag_low {
            k.kafka_lag_low = v as f64;
        }
        if let Some(v) = raw.on_stale {
            k.on_stale = v;
        }
        if k.redis_memory_low > k.redis_memory_high {
            return Err(self.err(
                "control.redis_memory_low",
                format!(
                    "{} is above redis_memory_high {} (the recovery threshold must not exceed the overload threshold)",
                    k.redis_memory_low, k.redis_memory_high
                ),
            ));
        }
        if k.kafka_lag_low > k.kafka_lag_high {
            return Err(self.err(
                "control.kafka_lag_low",
                format!(
                    "{} is above kafka_lag_high {} (the recovery threshold must not exceed the overload threshold)",
                    k.kafka_lag_low, k.kafka_lag_high
                ),
            ));
        }
        Ok(k)
    }

    fn hunters(&self, max_hunters: u32, min_hunters: u32) -> Result<(), PolicyError> {
        if max_hunters == 0 {
            return Err(self.err("max_hunters", "must be at least 1"));
        }
        if min_hunters > max_hunters {
            return Err(self.err(
                "min_hunters",
                format!("{min_hunters} is above max_hunters {max_hunters}"),
            ));
        }
        Ok(())
    }
}

fn compile_defaults(file: &Path, raw: &RawDefaults) -> Result<Policy, PolicyError> {
    let c = Check { file };
    let eval_period_s = c.seconds(
        "eval_period_s",
        raw.eval_period_s.unwrap_or(DEFAULT_EVAL_PERIOD_S),
        1,
    )?;
    let ttl_s = c.seconds("ttl_s", raw.ttl_s.unwrap_or(DEFAULT_TTL_S), 1)?;
    let stale_after_s = c.seconds(
        "stale_after_s",
        raw.stale_after_s.unwrap_or(DEFAULT_STALE_AFTER_S),
        0,
    )?;
    let read_timeout_ms = raw.read_timeout_ms.unwrap_or(DEFAULT_READ_TIMEOUT_MS);
    if !(1..=60_000).contains(&read_timeout_ms) {
        return Err(c.err(
            "read_timeout_ms",
            format!("{read_timeout_ms} is outside [1, 60000]"),
        ));
    }
    let max_hunters = raw.max_hunters.unwrap_or(DEFAULT_MAX_HUNTERS);
    let min_hunters = raw.min_hunters.unwrap_or(0);
    c.hunters(max_hunters, min_hunters)?;

    let mut redis = BTreeMap::new();
    for (name, endpoint) in &raw.redis {
        let field = format!("redis.{name}");
        if !is_plain_name(name, MAX_NAME_LEN) {
            return Err(c.err(
                field,
                "an endpoint name is 1-64 characters of [A-Za-z0-9._-]",
            ));
        }
        let url_ok = ["redis://", "rediss://", "unix://", "redis+unix://"]
            .iter()
            .any(|p| endpoint.url.starts_with(p));
        if !url_ok {
            return Err(c.err(
                format!("{field}.url"),
                format!(
                    "`{}` is not a redis://, rediss:// or unix:// URL",
                    endpoint.url
                ),
            ));
        }
        if endpoint.capacity_bytes == Some(0) {
            return Err(c.err(format!("{field}.capacity_bytes"), "must be at least 1"));
        }
        redis.insert(
            name.clone(),
            RedisEndpoint {
                url: endpoint.url.clone(),
                capacity_bytes: endpoint.capacity_bytes,
            },
        );
    }
    let kafka = match &raw.kafka {
        Some(k) => {
            validate_brokers(&k.brokers).map_err(|p| c.err("kafka.brokers", p))?;
            Some(KafkaCluster {
                brokers: k.brokers.clone(),
            })
        }
        None => None,
    };
    let knobs = c.knobs(&Knobs::default(), &raw.control)?;
    let signals = c.signals("signals", &raw.signals, raw)?;
    Ok(Policy {
        eval_period_ms: secs(eval_period_s),
        ttl_s,
        stale_after_ms: secs(stale_after_s),
        read_timeout_ms,
        govern_unlisted: raw.govern_unlisted.unwrap_or(true),
        default: HuntSpec {
            max_hunters,
            min_hunters,
            signals,
            knobs,
            pin_ratio: None,
        },
        hunts: BTreeMap::new(),
        redis,
        kafka,
    })
}

/// Checks `host:port[,host:port…]`.
pub fn validate_brokers(brokers: &str) -> Result<(), String> {
    if brokers.trim().is_empty() {
        return Err("must list at least one host:port".to_string());
    }
    for b in brokers.split(',') {
        let b = b.trim();
        let ok = b.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !ok {
            return Err(format!("`{b}` is not host:port"));
        }
    }
    Ok(())
}

fn compile_hunt(
    file: &PolicyFile,
    defaults: &RawDefaults,
    base: &Policy,
) -> Result<(String, HuntSpec), PolicyError> {
    let stem = file
        .path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    let hunt = huntgate_core::hunt_id::normalize_hunt_id(stem).map_err(|_| PolicyError::File {
        file: file.path.clone(),
        problem: format!(
            "the file name `{stem}` is not a hunt id (1-64 characters of [A-Za-z0-9._-])"
        ),
    })?;
    let raw: RawHunt = parse_yaml(&file.path, &file.text)?;
    let c = Check { file: &file.path };
    let max_hunters = raw.max_hunters.unwrap_or(base.default.max_hunters);
    let min_hunters = raw.min_hunters.unwrap_or(base.default.min_hunters);
    c.hunters(max_hunters, min_hunters)?;
    let signals = match &raw.signals {
        Some(list) => c.signals("signals", list, defaults)?,
        None => base.default.signals.clone(),
    };
    let knobs = c.knobs(&base.default.knobs, &raw.control)?;
    let pin_ratio = match raw.pin_ratio {
        Some(v) => Some(c.fraction("pin_ratio", v, true)?),
        None => None,
    };
    Ok((
        hunt,
        HuntSpec {
            max_hunters,
            min_hunters,
            signals,
            knobs,
            pin_ratio,
        },
    ))
}

/// Parses, applies `overrides` to defaults.yaml, validates and compiles a policy tree.
pub fn compile(tree: &PolicyTree, overrides: &Overrides) -> Result<Policy, PolicyError> {
    let defaults_path = &tree.defaults.path;
    let mut defaults: RawDefaults = parse_yaml(defaults_path, &tree.defaults.text)?;
    overrides.apply(&mut defaults);
    let mut policy = compile_defaults(defaults_path, &defaults)?;
    if tree.hunts.len() > MAX_HUNTS {
        return Err(PolicyError::File {
            file: defaults_path
                .parent()
                .unwrap_or(defaults_path)
                .join(super::HUNTS_DIR),
            problem: format!(
                "{} hunt files, more than the cap of {MAX_HUNTS} (it bounds metric labels)",
                tree.hunts.len()
            ),
        });
    }
    for file in &tree.hunts {
        let (hunt, spec) = compile_hunt(file, &defaults, &policy)?;
        if policy.hunts.insert(hunt.clone(), spec).is_some() {
            return Err(PolicyError::File {
                file: file.path.clone(),
                problem: format!("hunt `{hunt}` is defined by two files (hunt ids ignore case)"),
            });
        }
    }
    let signals: BTreeSet<SignalId> = policy.bound_signals();
    if signals.len() > MAX_SIGNALS {
        return Err(PolicyError::File {
            file: defaults_path.clone(),
            problem: format!(
                "the policy binds {} distinct signals, more than the cap of {MAX_SIGNALS}",
                signals.len()
            ),
        });
    }
    Ok(policy)
}

/// Reads and compiles the policy directory `dir`.
pub fn load_dir(dir: &Path, overrides: &Overrides) -> Result<Policy, PolicyError> {
    compile(&PolicyTree::read(dir)?, overrides)
}
