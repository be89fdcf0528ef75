//! The allocator's knobs: lease length, learning period, expiry margin and headroom.

use serde::{Deserialize, Serialize};

use crate::clock::Millis;

/// How the allocator leases shares. Every field has a default (see [`Default`]); a YAML or
/// JSON form may set any subset of them (unknown fields are errors).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields, default)]
pub struct AllocatorConfig {
    /// How long a grant is valid, counted by the proxy from the moment it sent its report
    /// (default 5000 ms: five missed ~1 s exchanges). The governor counts it from when it
    /// processed the report, which is later, so its view of every lease ends later than the
    /// proxy's own.
    pub lease_ms: Millis,
    /// How long a governor that starts without state (or lost it) grants no new capacity
    /// (default 5500 ms = `lease_ms` + `expiry_margin_ms`). Must be at least that sum, and
    /// at least the `lease_ms` of the previous incarnation.
    pub learning_ms: Millis,
    /// Extra time the governor keeps counting a lease after its end (default 500 ms): covers
    /// clock-rate differences between a proxy and the governor and, when several governor
    /// replicas share one state, the skew of their wall clocks.
    pub expiry_margin_ms: Millis,
    /// Least headroom above a proxy's active count (default 2 seats).
    pub min_headroom: u32,
    /// Headroom as a fraction of a proxy's active count, rounded up (default 0.05): the
    /// headroom is `max(min_headroom, ceil(headroom_ratio × active))`. It lets a proxy admit
    /// a few joins between two exchanges without having to reject first.
    pub headroom_ratio: f64,
}

impl Default for AllocatorConfig {
    fn default() -> Self {
        Self {
            lease_ms: 5_000,
            learning_ms: 5_500,
            expiry_margin_ms: 500,
            min_headroom: 2,
            headroom_ratio: 0.05,
        }
    }
}

/// Why an [`AllocatorConfig`] is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// `lease_ms` is 0.
    #[error("field `lease_ms`: must be at least 1")]
    ZeroLease,
    /// `learning_ms` is shorter than `lease_ms + expiry_margin_ms`.
    #[error(
        "field `learning_ms`: {learning_ms} is shorter than lease_ms + expiry_margin_ms ({needed})"
    )]
    ShortLearning {
        /// The configured learning period.
        learning_ms: Millis,
        /// The least learning period allowed.
        needed: Millis,
    },
    /// `headroom_ratio` is not a finite number in [0, 1].
    #[error("field `headroom_ratio`: {0} is outside [0, 1]")]
    HeadroomRatio(f64),
}

impl AllocatorConfig {
    /// Checks the fields against each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.lease_ms == 0 {
            return Err(ConfigError::ZeroLease);
        }
        let needed = self.window_ms();
        if self.learning_ms < needed {
            return Err(ConfigError::ShortLearning {
                learning_ms: self.learning_ms,
                needed,
            });
        }
        if !self.headroom_ratio.is_finite() || !(0.0..=1.0).contains(&self.headroom_ratio) {
            return Err(ConfigError::HeadroomRatio(self.headroom_ratio));
        }
        Ok(())
    }

    /// `lease_ms + expiry_margin_ms`: how long after a grant the governor may still count it.
    pub fn window_ms(&self) -> Millis {
        self.lease_ms.saturating_add(self.expiry_margin_ms)
    }

    /// The headroom of a proxy with `active` sessions:
    /// `max(min_headroom, ceil(headroom_ratio × active))`.
    pub fn headroom(&self, active: u32) -> u32 {
        let ratio = if self.headroom_ratio.is_finite() {
            self.headroom_ratio.clamp(0.0, 1.0)
        } else {
            0.0
        };
        // In [0, active] after the clamp, so the conversion is exact enough and in range.
        let by_ratio = (f64::from(active) * ratio).ceil() as u32;
        self.min_headroom.max(by_ratio)
    }
}
