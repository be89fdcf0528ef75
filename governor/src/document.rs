//! The throttle document served at `GET /v1/throttle`, and its versioning.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::Millis;
use crate::law::{Decisions, Reason};

/// One hunt's entry.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HuntEntry {
    /// The hunt's full capacity.
    pub max_hunters: u32,
    /// Multiplier of max_hunters, finite, in [0, 1].
    pub ratio: f64,
    /// floor(max_hunters × ratio): the limit the filter enforces.
    pub limit: u32,
    /// Why the ratio is what it is.
    pub reason: Reason,
}

/// The document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleDocument {
    /// Increases whenever the content (a hunt's ratio, max_hunters, limit or reason, the
    /// default ratio, ttl_s) changes or the policy reloads. Seeded from the wall clock at
    /// start-up, so it also increases across restarts.
    pub version: u64,
    /// When the evaluation that produced this document ran (ms since the Unix epoch).
    pub generated_at_ms: Millis,
    /// The governor's advice on how long a copy stays usable without a fresh fetch
    /// (`defaults.yaml` `ttl_s`). Informative: the huntgate filter does not read it today
    /// (its own `governor.max_stale_s` decides); see governor/README.md.
    pub ttl_s: u64,
    /// Ratio for hunts without an entry.
    pub default_ratio: f64,
    /// Entries by canonical (lowercase) hunt id.
    pub hunts: BTreeMap<String, HuntEntry>,
}

impl ThrottleDocument {
    /// The document before any evaluation: everything at ratio 1.0.
    pub fn initial(version: u64, now: Millis, ttl_s: u64) -> Self {
        Self {
            version,
            generated_at_ms: now,
            ttl_s,
            default_ratio: 1.0,
            hunts: BTreeMap::new(),
        }
    }

    /// The document after a tick: same version if the content is unchanged and no reload
    /// happened, else the next version.
    pub fn next(&self, decisions: &Decisions, ttl_s: u64, now: Millis, reloaded: bool) -> Self {
        let hunts: BTreeMap<String, HuntEntry> = decisions
            .hunts
            .iter()
            .map(|(hunt, d)| {
                (
                    hunt.clone(),
                    HuntEntry {
                        max_hunters: d.max_hunters,
                        ratio: d.ratio,
                        limit: d.limit,
                        reason: d.reason,
                    },
                )
            })
            .collect();
        let same = !reloaded
            && self.ttl_s == ttl_s
            && self.default_ratio == decisions.default.ratio
            && self.hunts == hunts;
        Self {
            version: if same {
                self.version
            } else {
                self.version.saturating_add(1)
            },
            generated_at_ms: now,
            ttl_s,
            default_ratio: decisions.default.ratio,
            hunts,
        }
    }

    /// The `ETag` value: the version in double quotes.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }
}
