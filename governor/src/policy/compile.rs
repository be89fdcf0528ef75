//! Parsing and validating policy files into a [`Policy`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::de::DeserializeOwned;

use super::overrides::{Applied, Overrides};
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

/// Operator words for the parser's Rust ones.
const PLAIN_WORDS: [(&str, &str); 12] = [
    ("invalid type: unit value", "no value"),
    (
        "expected u32",
        "expected a whole number from 0 to 4294967295",
    ),
    ("expected u64", "expected a whole number >= 0"),
    ("expected f64", "expected a number"),
    (
        "expected struct RawDefaults",
        "expected a mapping of defaults fields",
    ),
    (
        "expected struct RawHunt",
        "expected a mapping of hunt fields",
    ),
    (
        "expected struct RawControl",
        "expected a mapping of control knobs",
    ),
    ("expected struct RawRedis", "expected a mapping with `url`"),
    (
        "expected struct RawKafka",
        "expected a mapping with `brokers`",
    ),
    ("expected enum OnStale", "expected `hold` or `overloaded`"),
    ("invalid type: map", "a mapping"),
    ("invalid type: sequence", "a list"),
];

/// A parser message as an operator reads it: redacted and truncated, Rust type names
/// replaced, and without the field path the message repeats (`control: unknown field`
/// under field `control.cut_stepp`).
pub fn plain_problem(field: &str, problem: &str) -> String {
    let mut p = crate::text::sanitize(problem);
    if let Some((head, rest)) = p.split_once(": ") {
        let repeats = !head.is_empty()
            && (field == head
                || field.starts_with(&format!("{head}."))
                || field.starts_with(&format!("{head}[")));
        if repeats {
            p = rest.to_string();
        }
    }
    for (rust, plain) in PLAIN_WORDS {
        p = p.replace(rust, plain);
    }
    p
}

/// Parses one YAML file into `T`, naming the field on error. An empty file is `{}`. A file
/// that is not a mapping (a link to some other file, say) is refused without echoing it.
pub fn parse_yaml<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, PolicyError> {
    use serde_yaml_ng::Value;
    let value = serde_yaml_ng::from_str::<Value>(text);
    let kind = match &value {
        Ok(Value::Null) | Ok(Value::Mapping(_)) | Err(_) => None,
        Ok(Value::String(_)) => Some("a text"),
        Ok(Value::Sequence(_)) => Some("a list"),
        Ok(Value::Number(_)) => Some("a number"),
        Ok(Value::Bool(_)) => Some("true or false"),
        Ok(Value::Tagged(_)) => Some("a tagged value"),
    };
    if let Some(kind) = kind {
        return Err(PolicyError::File {
            file: file.to_path_buf(),
            problem: format!(
                "not a mapping of policy fields: the file holds {kind} of {} bytes (its content is not shown)",
                text.len()
            ),
        });
    }
    let empty = matches!(&value, Ok(Value::Null));
    let text = if empty { "{}" } else { text };
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let problem = e.into_inner().to_string();
        if field == "." || field.is_empty() {
            PolicyError::File {
                file: file.to_path_buf(),
                problem: plain_problem("", &problem),
            }
        } else {
            PolicyError::Field {
                file: file.to_path_buf(),
                problem: plain_problem(&field, &problem),
                field,
            }
        }
    })
}

/// Checks a Redis URL: `redis://[user:password@]HOST[:PORT][/DB]`, `rediss://…`, or
/// `unix:///PATH` (`redis+unix://`). The message echoes the URL redacted.
pub fn check_redis_url(url: &str) -> Result<(), String> {
    let shown = crate::text::echo(url);
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "`{shown}` is not a URL: expected redis://HOST[:PORT][/DB], rediss://... or unix:///PATH"
        ));
    };
    match scheme {
        "redis" | "rediss" => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            let (host, port) = match hostport.strip_prefix('[') {
                Some(v6) => match v6.split_once(']') {
                    Some((h, tail)) => (h, tail.strip_prefix(':')),
                    None => ("", None),
                },
                None => match hostport.rsplit_once(':') {
                    Some((h, p)) => (h, Some(p)),
                    None => (hostport, None),
                },
            };
            if host.is_empty() {
                return Err(format!("`{shown}` has no host"));
            }
            if let Some(p) = port {
                if !p.parse::<u16>().is_ok_and(|n| n > 0) {
                    return Err(format!(
                        "`{shown}`: port `{}` is not in 1-65535",
                        crate::text::echo(p)
                    ));
                }
            }
            Ok(())
        }
        "unix" | "redis+unix" if !rest.trim_start_matches('/').is_empty() => Ok(()),
        "unix" | "redis+unix" => Err(format!("`{shown}` has no socket path")),
        _ => Err(format!(
            "`{shown}` is not a redis://, rediss:// or unix:// URL"
        )),
    }
}

/// Field checks for one file.
struct Check<'a> {
    file: &'a Path,
    /// Where unset fields come from (defaults.yaml, for a hunt file).
    base: Option<&'a Path>,
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
        // -0.0 is accepted as 0 and served as 0 (never `"ratio": -0.0`).
        Ok(if v == 0.0 { 0.0 } else { v })
    }

    fn signal(
        &self,
        field: &str,
        s: &str,
        defaults: &RawDefaults,
    ) -> Result<SignalId, PolicyError> {
        let id = SignalId::parse(s)
            .map_err(|e| self.err(field, crate::text::sanitize(&e.to_string())))?;
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
            if let Some(first) = out.iter().position(|x| *x == id) {
                return Err(self.err(
                    format!("{field}[{i}]"),
                    format!("`{id}` is already listed as {field}[{first}]"),
                ));
            }
            out.push(id);
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
            k.redis_memory_high = self.fraction("control.redis_memory_high", v, false)?;
        }
        if let Some(v) = raw.redis_memory_low {
            k.redis_memory_low = self.fraction("control.redis_memory_low", v, true)?;
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
        let why = "the recovery threshold must not exceed the overload threshold";
        if k.redis_memory_low > k.redis_memory_high {
            return Err(if raw.redis_memory_low.is_none() {
                self.err(
                    "control.redis_memory_high",
                    format!(
                        "{} is below redis_memory_low {}{} ({why})",
                        k.redis_memory_high,
                        k.redis_memory_low,
                        self.origin(false)
                    ),
                )
            } else {
                self.err(
                    "control.redis_memory_low",
                    format!(
                        "{} is above redis_memory_high {}{} ({why})",
                        k.redis_memory_low,
                        k.redis_memory_high,
                        self.origin(raw.redis_memory_high.is_some())
                    ),
                )
            });
        }
        if k.kafka_lag_low > k.kafka_lag_high {
            return Err(if raw.kafka_lag_low.is_none() {
                self.err(
                    "control.kafka_lag_high",
                    format!(
                        "{} is below kafka_lag_low {}{} ({why})",
                        k.kafka_lag_high,
                        k.kafka_lag_low,
                        self.origin(false)
                    ),
                )
            } else {
                self.err(
                    "control.kafka_lag_low",
                    format!(
                        "{} is above kafka_lag_high {}{} ({why})",
                        k.kafka_lag_low,
                        k.kafka_lag_high,
                        self.origin(raw.kafka_lag_high.is_some())
                    ),
                )
            });
        }
        Ok(k)
    }

    /// " inherited from defaults.yaml" when a value was not set in this file.
    fn origin(&self, set_here: bool) -> String {
        match (set_here, self.base) {
            (false, Some(base)) => format!(
                " (inherited from {})",
                base.file_name().map_or_else(
                    || base.display().to_string(),
                    |n| n.to_string_lossy().into_owned()
                )
            ),
            _ => String::new(),
        }
    }

    /// max_hunters ≥ 1 and min_hunters ≤ max_hunters; `*_here`: whether this file set it.
    /// The error names a field that this file sets, and says where the other came from.
    fn hunters(
        &self,
        (max_hunters, max_here): (u32, bool),
        (min_hunters, min_here): (u32, bool),
    ) -> Result<(), PolicyError> {
        if max_hunters == 0 {
            return Err(self.err("max_hunters", "must be at least 1"));
        }
        let bound = huntgate_core::config::MAX_HUNTERS_LIMIT;
        if max_hunters > bound {
            // The filter refuses a document above its own bound: validate alike.
            return Err(self.err(
                "max_hunters",
                format!("{max_hunters} is above {bound}, the filter's bound"),
            ));
        }
        if min_hunters > max_hunters {
            if max_here && !min_here {
                return Err(self.err(
                    "max_hunters",
                    format!(
                        "{max_hunters} is below min_hunters {min_hunters}{}",
                        self.origin(false)
                    ),
                ));
            }
            return Err(self.err(
                "min_hunters",
                format!(
                    "{min_hunters} is above max_hunters {max_hunters}{}",
                    self.origin(max_here)
                ),
            ));
        }
        Ok(())
    }
}

fn compile_defaults(
    file: &Path,
    raw: &RawDefaults,
    applied: &Applied,
) -> Result<Policy, PolicyError> {
    let c = Check { file, base: None };
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
    c.hunters((max_hunters, true), (min_hunters, true))?;

    let mut redis = BTreeMap::new();
    for (name, endpoint) in &raw.redis {
        let field = format!("redis.{name}");
        if !is_plain_name(name, MAX_NAME_LEN) {
            return Err(c.err(
                field,
                "an endpoint name is 1-64 characters of [A-Za-z0-9._-]",
            ));
        }
        if let Err(problem) = check_redis_url(&endpoint.url) {
            return Err(if applied.redis.contains(name) {
                PolicyError::Flag {
                    flag: "--redis (HUNTGATE_REDIS)".into(),
                    problem: format!("URL of Redis endpoint `{name}`: {problem}"),
                }
            } else {
                c.err(format!("{field}.url"), problem)
            });
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
            validate_brokers(&k.brokers).map_err(|p| {
                if applied.kafka {
                    PolicyError::Flag {
                        flag: "--kafka (HUNTGATE_KAFKA)".into(),
                        problem: p,
                    }
                } else {
                    c.err("kafka.brokers", p)
                }
            })?;
            Some(KafkaCluster {
                brokers: k.brokers.clone(),
            })
        }
        None => None,
    };
    let base = Knobs {
        eval_period_ms: secs(eval_period_s),
        ..Knobs::default()
    };
    let knobs = c.knobs(&base, &raw.control)?;
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
        let shown = crate::text::echo(b);
        let Some((host, port)) = b.rsplit_once(':') else {
            return Err(format!("`{shown}` is not host:port"));
        };
        if host.is_empty() {
            return Err(format!("`{shown}` has no host"));
        }
        if !port.parse::<u16>().is_ok_and(|p| p > 0) {
            return Err(format!(
                "`{shown}`: port `{}` is not in 1-65535",
                crate::text::echo(port)
            ));
        }
    }
    Ok(())
}

fn compile_hunt(
    file: &PolicyFile,
    defaults: &RawDefaults,
    defaults_path: &Path,
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
            "the file name `{}` is not a hunt id (1-64 characters of [A-Za-z0-9._-])",
            crate::text::echo(stem)
        ),
    })?;
    let raw: RawHunt = parse_yaml(&file.path, &file.text)?;
    let c = Check {
        file: &file.path,
        base: Some(defaults_path),
    };
    let max_hunters = raw.max_hunters.unwrap_or(base.default.max_hunters);
    let min_hunters = raw.min_hunters.unwrap_or(base.default.min_hunters);
    c.hunters(
        (max_hunters, raw.max_hunters.is_some()),
        (min_hunters, raw.min_hunters.is_some()),
    )?;
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
    let applied = overrides.apply(&mut defaults);
    let mut policy = compile_defaults(defaults_path, &defaults, &applied)?;
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
        let (hunt, spec) = compile_hunt(file, &defaults, defaults_path, &policy)?;
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
