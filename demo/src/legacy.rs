//! The legacy `hunt-config.yml` layer, as the Veltrix hunt pods had it: every event of a hunt
//! opens or refreshes the sender's session, and once a hunt counts more than
//! `max_concurrent_hunters` live sessions, **every** event of that hunt is throttled (429),
//! admitted players included. Pure: time is an argument.

use std::collections::HashMap;

use serde::Deserialize;

/// The fields of `hunt-config.yml` this layer reads (others are ignored, as Veltrix did).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct HuntConfig {
    /// Sessions per hunt above which every event is throttled.
    pub max_concurrent_hunters: u64,
    /// Seconds without an event after which a session ends.
    #[serde(default = "default_session_ttl_s")]
    pub session_ttl_s: u64,
    /// Retry-After of a throttled event.
    #[serde(default = "default_retry_after_s")]
    pub retry_after_s: u64,
}

fn default_session_ttl_s() -> u64 {
    10
}

fn default_retry_after_s() -> u64 {
    5
}

impl HuntConfig {
    /// Parses the YAML text of a `hunt-config.yml`.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        Ok(serde_yaml_ng::from_str(text)?)
    }
}

/// Verdict on one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through.
    Pass,
    /// Throttle it: the hunt has `sessions` > the cap.
    Throttle {
        /// Sessions counted.
        sessions: u64,
    },
}

/// Session counter of one hunt (the demo runs one hunt, `hunt-001`).
#[derive(Debug)]
pub struct LegacyCap {
    config: HuntConfig,
    /// hunter → time of last event, ms.
    sessions: HashMap<String, u64>,
    last_sweep_ms: u64,
}

/// Sessions at most tracked (bounded memory); past it new senders are throttled uncounted.
const MAX_SESSIONS: usize = 1_000_000;

impl LegacyCap {
    /// A counter enforcing `config`.
    pub fn new(config: HuntConfig) -> Self {
        Self {
            config,
            sessions: HashMap::new(),
            last_sweep_ms: 0,
        }
    }

    /// Live sessions at `now_ms` (after expiring the old ones).
    pub fn sessions(&mut self, now_ms: u64) -> u64 {
        self.sweep(now_ms);
        self.sessions.len() as u64
    }

    /// The configuration in force.
    pub fn config(&self) -> &HuntConfig {
        &self.config
    }

    /// One event of `hunter` at `now_ms`: refreshes its session, then decides.
    pub fn observe(&mut self, hunter: &str, now_ms: u64) -> Verdict {
        if now_ms.saturating_sub(self.last_sweep_ms) >= 1000 {
            self.sweep(now_ms);
        }
        if let Some(seen) = self.sessions.get_mut(hunter) {
            *seen = now_ms;
        } else if self.sessions.len() < MAX_SESSIONS {
            self.sessions.insert(hunter.to_string(), now_ms);
        }
        let sessions = self.sessions.len() as u64;
        if sessions > self.config.max_concurrent_hunters {
            Verdict::Throttle { sessions }
        } else {
            Verdict::Pass
        }
    }

    fn sweep(&mut self, now_ms: u64) {
        let ttl_ms = self.config.session_ttl_s.saturating_mul(1000);
        self.sessions
            .retain(|_, seen| now_ms.saturating_sub(*seen) < ttl_ms);
        self.last_sweep_ms = now_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(max: u64) -> LegacyCap {
        LegacyCap::new(HuntConfig {
            max_concurrent_hunters: max,
            session_ttl_s: 10,
            retry_after_s: 5,
        })
    }

    #[test]
    fn parses_the_legacy_file_and_ignores_other_keys() {
        let c = HuntConfig::parse("max_concurrent_hunters: 2000\nleaderboard_refresh_s: 30\n");
        assert_eq!(
            c.ok(),
            Some(HuntConfig {
                max_concurrent_hunters: 2000,
                session_ttl_s: 10,
                retry_after_s: 5
            })
        );
        assert!(HuntConfig::parse("session_ttl_s: 3\n").is_err());
    }

    #[test]
    fn above_the_cap_every_event_is_throttled_admitted_players_too() {
        let mut c = cap(2);
        assert_eq!(c.observe("alice", 0), Verdict::Pass);
        assert_eq!(c.observe("bob", 10), Verdict::Pass);
        // A third hunter joins: the hunt has 3 sessions > 2 ...
        assert_eq!(c.observe("carol", 20), Verdict::Throttle { sessions: 3 });
        // ... and alice, who was playing, is frozen too.
        assert_eq!(c.observe("alice", 30), Verdict::Throttle { sessions: 3 });
    }

    #[test]
    fn sessions_expire_after_the_ttl_and_the_hunt_thaws() {
        let mut c = cap(2);
        c.observe("alice", 0);
        c.observe("bob", 0);
        c.observe("carol", 0);
        assert_eq!(c.sessions(9_999), 3);
        // carol gives up; alice and bob keep sending.
        c.observe("alice", 9_000);
        c.observe("bob", 9_000);
        assert_eq!(c.sessions(10_000), 2);
        assert_eq!(c.observe("alice", 10_500), Verdict::Pass);
    }
}
