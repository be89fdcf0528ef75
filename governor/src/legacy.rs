//! `import-legacy`: converts a legacy `hunt-config.yml` (`max_concurrent_hunters: 2000`, a
//! static per-hunt cap) into a huntgate policy file.

use serde_yaml_ng::Value;

use crate::policy::raw::{RawControl, RawDefaults, RawHunt};
use crate::policy::{DEFAULT_EVAL_PERIOD_S, DEFAULT_STALE_AFTER_S, DEFAULT_TTL_S};

/// The legacy key that carries the cap.
pub const LEGACY_CAP_KEY: &str = "max_concurrent_hunters";
/// A legacy key the filter has under the same name (`session_ttl_s`).
pub const FILTER_SESSION_TTL_KEY: &str = "session_ttl_s";
/// A legacy key the filter has as `reject.retry_after_s`.
pub const FILTER_RETRY_AFTER_KEY: &str = "retry_after_s";

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

/// Converts the text of a legacy file. `session_ttl_s` and `retry_after_s` are printed as
/// a snippet of the filter's configuration (a comment of the output); other keys are
/// listed as having no huntgate equivalent.
pub fn import_legacy(text: &str, target: &LegacyTarget) -> Result<String, LegacyError> {
    let value: Value = serde_yaml_ng::from_str(text)
        .map_err(|e| LegacyError::Yaml(crate::text::sanitize(&e.to_string())))?;
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
                crate::text::echo(
                    serde_yaml_ng::to_string(cap_value)
                        .unwrap_or_default()
                        .trim()
                ),
                u32::MAX
            ))
        })?;
    // Keys the huntgate Envoy filter (not the governor) takes: a snippet of its config.
    let mut filter_keys: Vec<String> = Vec::new();
    let mut reject: Vec<String> = Vec::new();
    let mut ignored: Vec<String> = Vec::new();
    for (k, v) in map {
        let Some(key) = k.as_str() else { continue };
        let whole = v.as_u64();
        match (key, whole) {
            (LEGACY_CAP_KEY, _) => {}
            (FILTER_SESSION_TTL_KEY, Some(n)) => {
                filter_keys.push(format!("\"{FILTER_SESSION_TTL_KEY}\": {n}"));
            }
            (FILTER_RETRY_AFTER_KEY, Some(n)) => reject.push(format!("\"retry_after_s\": {n}")),
            _ => ignored.push(crate::text::echo(key)),
        }
    }
    if !reject.is_empty() {
        filter_keys.push(format!("\"reject\": {{{}}}", reject.join(", ")));
    }

    let mut out = String::new();
    out.push_str(
        "# Converted by `huntgate-governor import-legacy` from a legacy hunt-config.yml.\n",
    );
    out.push_str(&format!(
        "# The legacy file capped hunts at {LEGACY_CAP_KEY}: {cap}; here that is max_hunters.\n"
    ));
    if !filter_keys.is_empty() {
        out.push_str(
            "# Keys of the huntgate Envoy filter, not of the governor: merge into the filter's\n",
        );
        out.push_str("# plugin configuration (README.md, \"Configuration\"):\n");
        out.push_str(&format!("#   {{{}}}\n", filter_keys.join(", ")));
    }
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

/// Why `import-legacy -o FILE` refuses to write.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The output is the input.
    #[error("-o {0}: that is the legacy file being converted")]
    SameAsInput(String),
    /// The output exists (and `--force` was not given).
    #[error("-o {0}: the file exists (add --force to replace it)")]
    Exists(String),
    /// A hunt file whose name would govern another hunt.
    #[error("-o {path}: a hunt file governs the hunt of its name (`{stem}`), not `{hunt}`; write it as {hunt}.yaml")]
    OtherHunt {
        /// The output path.
        path: String,
        /// Its file stem.
        stem: String,
        /// The hunt converted.
        hunt: String,
    },
}

/// Checks an `-o` path before anything is written: never the input, never an existing
/// file without `force`, and a `.yaml`/`.yml` hunt file must be named after its hunt.
pub fn check_output(
    input: &std::path::Path,
    output: &std::path::Path,
    target: &LegacyTarget,
    force: bool,
) -> Result<(), OutputError> {
    let shown = output.display().to_string();
    let same = match (input.canonicalize(), output.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        return Err(OutputError::SameAsInput(shown));
    }
    if let LegacyTarget::Hunt(hunt) = target {
        let yaml = output
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
        let stem = output
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        if yaml && !stem.eq_ignore_ascii_case(hunt) {
            return Err(OutputError::OtherHunt {
                path: shown,
                stem: stem.to_string(),
                hunt: hunt.clone(),
            });
        }
    }
    if output.exists() && !force {
        return Err(OutputError::Exists(shown));
    }
    Ok(())
}
