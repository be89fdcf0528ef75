//! `import-legacy`: converts a legacy `hunt-config.yml` (`max_concurrent_hunters: 2000`, a
//! static per-hunt cap) into a huntgate policy file.

use serde_yaml_ng::Value;

use crate::policy::raw::{RawControl, RawDefaults, RawHunt};
use crate::policy::{DEFAULT_EVAL_PERIOD_S, DEFAULT_STALE_AFTER_S, DEFAULT_TTL_S};

/// The legacy key that carries the cap.
pub const LEGACY_CAP_KEY: &str = "max_concurrent_hunters";

/// What to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegacyTarget {
    /// A complete `policies/defaults.yaml` whose default max_hunters is the legacy cap.
    Defaults,
    /// A `policies/hunts/<hunt>.yaml` for one hunt.
    Hunt(String),
}

/// Why a legacy file could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum LegacyError {
    /// Not YAML, or not a mapping.
    #[error("not a YAML mapping: {0}")]
    Yaml(String),
    /// No `max_concurrent_hunters`.
    #[error("no `{LEGACY_CAP_KEY}` key: nothing to convert")]
    Missing,
    /// `max_concurrent_hunters` is not a whole number in [1, 4294967295].
    #[error("`{LEGACY_CAP_KEY}`: {0}")]
    Invalid(String),
    /// The policy could not be written as YAML.
    #[error("cannot write YAML: {0}")]
    Write(String),
}

/// Converts the text of a legacy file. Keys other than `max_concurrent_hunters` are listed
/// in a comment of the output (they have no huntgate equivalent).
pub fn import_legacy(text: &str, target: &LegacyTarget) -> Result<String, LegacyError> {
    let value: Value =
        serde_yaml_ng::from_str(text).map_err(|e| LegacyError::Yaml(e.to_string()))?;
    let map = value
        .as_mapping()
        .ok_or_else(|| LegacyError::Yaml("the top level is not a mapping".into()))?;
    let cap_value = map.get(LEGACY_CAP_KEY).ok_or(LegacyError::Missing)?;
    let cap = cap_value
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .filter(|v| *v > 0)
        .ok_or_else(|| {
            LegacyError::Invalid(format!(
                "{} is not a whole number in [1, {}]",
                serde_yaml_ng::to_string(cap_value)
                    .unwrap_or_default()
                    .trim(),
                u32::MAX
            ))
        })?;
    let ignored: Vec<String> = map
        .keys()
        .filter_map(|k| k.as_str())
        .filter(|k| *k != LEGACY_CAP_KEY)
        .map(str::to_string)
        .collect();

    let mut out = String::new();
    out.push_str(
        "# Converted by `huntgate-governor import-legacy` from a legacy hunt-config.yml.\n",
    );
    out.push_str(&format!(
        "# The legacy file capped hunts at {LEGACY_CAP_KEY}: {cap}; here that is max_hunters.\n"
    ));
    if !ignored.is_empty() {
        out.push_str(&format!(
            "# Legacy keys with no huntgate equivalent (not converted): {}\n",
            ignored.join(", ")
        ));
    }
    let body = match target {
        LegacyTarget::Defaults => {
            out.push_str(
                "# No signal is bound yet, so every ratio stays 1.0 (the same static cap) until\n",
            );
            out.push_str(
                "# you add redis:/kafka: endpoints and `signals:` (see governor/README.md).\n",
            );
            let defaults = RawDefaults {
                eval_period_s: Some(DEFAULT_EVAL_PERIOD_S),
                ttl_s: Some(DEFAULT_TTL_S),
                stale_after_s: Some(DEFAULT_STALE_AFTER_S),
                max_hunters: Some(cap),
                min_hunters: Some(0),
                control: RawControl::default(),
                ..RawDefaults::default()
            };
            serde_yaml_ng::to_string(&defaults)
        }
        LegacyTarget::Hunt(hunt) => {
            out.push_str(&format!("# Save as policies/hunts/{hunt}.yaml.\n"));
            let h = RawHunt {
                max_hunters: Some(cap),
                ..RawHunt::default()
            };
            serde_yaml_ng::to_string(&h)
        }
    }
    .map_err(|e| LegacyError::Write(e.to_string()))?;
    out.push_str(&body);
    Ok(out)
}
