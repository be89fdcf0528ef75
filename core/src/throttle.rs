//! Throttle ratios: the governor's per-hunt multipliers of `max_hunters`, as
//! kept in Envoy shared data under [`THROTTLE_KEY`] (JSON).
//!
//! With no document the ratio is 1.0 and the configured `max_hunters` apply.

use hashbrown::HashMap;
use serde::Deserialize;

use crate::config::HuntSettings;
use crate::shared_data::{SharedData, StoreError};

/// Shared-data key of the throttle document.
pub const THROTTLE_KEY: &str = "huntgate/v1/throttle";
/// Largest throttle document accepted, in bytes.
pub const MAX_THROTTLE_BYTES: usize = 1 << 20;

/// One hunt's entry in the throttle document.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HuntThrottle {
    /// Multiplier of max_hunters, clamped to [0, 1].
    pub ratio: f64,
    /// Replacement for the configured max_hunters, if the governor sets one.
    #[serde(default)]
    pub max_hunters: Option<u32>,
}

/// The throttle document.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleTable {
    /// Monotonic version from the governor.
    #[serde(default)]
    pub version: u64,
    /// Ratio for hunts not listed.
    #[serde(default = "one")]
    pub default_ratio: f64,
    /// Per-hunt entries, by canonical hunt id.
    #[serde(default)]
    pub hunts: HashMap<String, HuntThrottle>,
}

fn one() -> f64 {
    1.0
}

impl Default for ThrottleTable {
    fn default() -> Self {
        Self {
            version: 0,
            default_ratio: 1.0,
            hunts: HashMap::new(),
        }
    }
}

impl ThrottleTable {
    /// Parses and validates a document; ratios must be finite and within [0, 1].
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() > MAX_THROTTLE_BYTES {
            return Err(format!("throttle document over {MAX_THROTTLE_BYTES} bytes"));
        }
        let table: ThrottleTable = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let valid = |r: f64| r.is_finite() && (0.0..=1.0).contains(&r);
        if !valid(table.default_ratio) {
            return Err("default_ratio must be within [0, 1]".to_string());
        }
        if let Some((hunt, _)) = table.hunts.iter().find(|(_, t)| !valid(t.ratio)) {
            return Err(format!("hunts.{hunt}.ratio must be within [0, 1]"));
        }
        Ok(table)
    }

    /// The enforced limit: floor(max_hunters × ratio).
    pub fn limit(&self, hunt: &str, settings: &HuntSettings) -> u32 {
        let (ratio, max_hunters) = match self.hunts.get(hunt) {
            Some(entry) => (
                entry.ratio,
                entry.max_hunters.unwrap_or(settings.max_hunters),
            ),
            None => (self.default_ratio, settings.max_hunters),
        };
        effective_limit(max_hunters, ratio)
    }
}

/// floor(max_hunters × ratio), with the ratio clamped to [0, 1].
pub fn effective_limit(max_hunters: u32, ratio: f64) -> u32 {
    let ratio = if ratio.is_finite() {
        ratio.clamp(0.0, 1.0)
    } else {
        1.0
    };
    // Exact for every u32 × ratio: f64 holds u32 exactly; a tiny epsilon keeps 0.3 × 10 = 3.
    let product = f64::from(max_hunters) * ratio + 1e-9;
    (product.floor() as u32).min(max_hunters)
}

/// A worker's copy of the throttle document, re-parsed only when the key changes.
#[derive(Debug, Default)]
pub struct ThrottleCache {
    table: ThrottleTable,
    cas: u32,
    /// Set when the stored document could not be parsed (the last good one stays).
    pub last_error: Option<String>,
}

impl ThrottleCache {
    /// Refreshes from shared data and returns the table in force.
    pub fn current<S: SharedData>(&mut self, shared: &S) -> Result<&ThrottleTable, StoreError> {
        if let Some((bytes, cas)) = shared.get(THROTTLE_KEY)? {
            if cas != self.cas {
                self.cas = cas;
                match ThrottleTable::decode(&bytes) {
                    Ok(table) => {
                        self.table = table;
                        self.last_error = None;
                    }
                    Err(e) => self.last_error = Some(e),
                }
            }
        }
        Ok(&self.table)
    }
}
