//! One hunt's allocation as several governor replicas keep it in one shared store (see
//! `crate::coordination`): the [`HuntAllocation`], a revision for compare-and-set, and the
//! fleet limit each replica computed lately.
//!
//! Replicas evaluate the control law on their own, so for a moment (one policy reload, one
//! evaluation period) they may disagree about a hunt's limit. Every grant is computed
//! against the **lowest** limit any replica reported within the last lease window
//! ([`SharedHunt::effective_limit`]), so the replicas together never grant more than the
//! lowest of their limits; a raise takes effect once every replica has made it (or a
//! replica that stopped exchanging has been silent for a window).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::HuntAllocation;
use crate::clock::Millis;

/// The limit one replica passed with its latest exchange for the hunt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitSeen {
    /// The fleet limit, `floor(max_hunters × ratio)`, on that replica.
    pub limit: u32,
    /// When that replica last used it (its clock).
    pub at_ms: Millis,
}

/// What the store holds per hunt.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedHunt {
    /// Bumped by every write; a write succeeds only over the revision it read.
    pub rev: u64,
    /// Per replica id, the limit it used last.
    #[serde(default)]
    pub limits: BTreeMap<String, LimitSeen>,
    /// The allocation itself.
    pub allocation: HuntAllocation,
}

impl SharedHunt {
    /// A hunt no replica has stored yet; `learning_until_ms` as in [`HuntAllocation::new`].
    pub fn new(learning_until_ms: Millis) -> Self {
        Self {
            rev: 0,
            limits: BTreeMap::new(),
            allocation: HuntAllocation::new(learning_until_ms),
        }
    }

    /// Records `limit` as `replica`'s at `now_ms`, forgets replicas silent for longer than
    /// `window_ms` (at most [`MAX_REPLICAS`] are kept: the oldest go first) and returns the
    /// lowest limit of those left: the one to grant against.
    pub fn effective_limit(
        &mut self,
        replica: &str,
        limit: u32,
        now_ms: Millis,
        window_ms: Millis,
    ) -> u32 {
        self.limits.insert(
            replica.to_owned(),
            LimitSeen {
                limit,
                at_ms: now_ms,
            },
        );
        self.limits
            .retain(|_, seen| seen.at_ms.saturating_add(window_ms) > now_ms);
        while self.limits.len() > MAX_REPLICAS {
            let oldest = self
                .limits
                .iter()
                .filter(|(id, _)| id.as_str() != replica)
                .min_by_key(|(_, seen)| seen.at_ms)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => self.limits.remove(&id),
                None => break,
            };
        }
        self.limits
            .values()
            .map(|seen| seen.limit)
            .min()
            .unwrap_or(limit)
    }

    /// The stored form: the revision, a space, then JSON (the revision first so that the
    /// store's compare-and-set script can read it without parsing JSON).
    pub fn encode(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        format!("{} {json}", self.rev)
    }

    /// Parses [`SharedHunt::encode`]'s form; the error says what is wrong.
    pub fn decode(stored: &str) -> Result<Self, String> {
        let (rev, json) = stored
            .split_once(' ')
            .ok_or_else(|| "no revision prefix".to_owned())?;
        let hunt: Self = serde_json::from_str(json).map_err(|e| e.to_string())?;
        if rev.parse::<u64>().ok() != Some(hunt.rev) {
            return Err(format!("revision prefix `{rev}` is not {}", hunt.rev));
        }
        Ok(hunt)
    }
}

/// Replicas whose limits are remembered per hunt.
pub const MAX_REPLICAS: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_follow_the_lowest_recent_limit() {
        let mut hunt = SharedHunt::new(0);
        assert_eq!(hunt.effective_limit("a", 100, 1_000, 5_500), 100);
        // b has cut already; a has not.
        assert_eq!(hunt.effective_limit("b", 60, 1_200, 5_500), 60);
        assert_eq!(hunt.effective_limit("a", 100, 1_400, 5_500), 60);
        // A raise counts once every replica has made it...
        assert_eq!(hunt.effective_limit("b", 120, 2_000, 5_500), 100);
        assert_eq!(hunt.effective_limit("a", 120, 2_100, 5_500), 120);
        // ...or once the one that did not has been silent for a window.
        assert_eq!(hunt.effective_limit("b", 50, 3_000, 5_500), 50);
        assert_eq!(hunt.effective_limit("a", 120, 8_499, 5_500), 50);
        assert_eq!(hunt.effective_limit("a", 120, 8_500, 5_500), 120);
    }

    #[test]
    fn remembers_a_bounded_number_of_replicas() {
        let mut hunt = SharedHunt::new(0);
        for i in 0..40u64 {
            hunt.effective_limit(&format!("r{i}"), 10 + i as u32, 1_000 + i, 60_000);
        }
        assert_eq!(hunt.limits.len(), MAX_REPLICAS);
        assert!(hunt.limits.contains_key("r39"));
    }

    #[test]
    fn the_stored_form_round_trips_and_refuses_a_mismatched_revision() {
        let mut hunt = SharedHunt::new(7);
        hunt.rev = 41;
        hunt.effective_limit("a", 100, 1_000, 5_500);
        let stored = hunt.encode();
        assert!(stored.starts_with("41 {"), "{stored}");
        assert_eq!(SharedHunt::decode(&stored), Ok(hunt));
        let forged = stored.replacen("41 ", "42 ", 1);
        assert!(SharedHunt::decode(&forged).is_err());
        assert!(SharedHunt::decode("{}").is_err());
    }
}
