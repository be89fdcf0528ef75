//! The demo's knobs: the spike, the backends' sizes and the three runs. Two presets, `full`
//! (about 5 minutes) and `smoke` (about 1.5 minutes, runs b and c only).

use std::time::Duration;

use crate::ramp::Spike;

/// One of the three runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    /// (a) the legacy `hunt-config.yml` cap in the hunt service.
    Legacy,
    /// (b) no admission control.
    Open,
    /// (c) huntgate in Envoy, fed by the governor.
    Huntgate,
}

impl RunKind {
    /// All runs, in report order.
    pub const ALL: [RunKind; 3] = [RunKind::Legacy, RunKind::Open, RunKind::Huntgate];

    /// Letter used in files and tables.
    pub fn id(self) -> &'static str {
        match self {
            RunKind::Legacy => "a",
            RunKind::Open => "b",
            RunKind::Huntgate => "c",
        }
    }

    /// Human name.
    pub fn title(self) -> &'static str {
        match self {
            RunKind::Legacy => "(a) legacy fixed cap",
            RunKind::Open => "(b) no admission control",
            RunKind::Huntgate => "(c) huntgate + governor",
        }
    }

    /// Parses `a`, `b`, `c` (or `legacy`, `none`, `huntgate`).
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "a" | "legacy" => Ok(RunKind::Legacy),
            "b" | "none" | "open" => Ok(RunKind::Open),
            "c" | "huntgate" => Ok(RunKind::Huntgate),
            other => anyhow::bail!("unknown run `{other}` (a, b or c)"),
        }
    }
}

/// Everything a demo run needs to know.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Preset name.
    pub name: &'static str,
    /// Runs, in order.
    pub runs: Vec<RunKind>,
    /// Arrivals of hunters.
    pub spike: Spike,
    /// Observation after the last arrival (lag drain, limit recovery).
    pub tail: Duration,
    /// Mean time between two requests of a playing hunter.
    pub move_interval: Duration,
    /// Every n-th request of a playing hunter reads the leaderboard.
    pub leaderboard_every: u32,
    /// Redis maxmemory, bytes.
    pub redis_maxmemory: u64,
    /// Session state per hunter in Redis, bytes.
    pub session_bytes: usize,
    /// Session TTL of the service and the filter, seconds.
    pub session_ttl_s: u64,
    /// Events per second the consumer group drains.
    pub scorer_rate: u64,
    /// huntgate's and the governor's `max_hunters` for hunt-001.
    pub max_hunters: u64,
    /// The governor's `min_hunters` for hunt-001 (the floor of the limit).
    pub min_hunters: u64,
    /// Retry-After of huntgate's rejections, seconds.
    pub retry_after_s: u64,
    /// Lag at or under which Kafka counts as drained.
    pub drain_threshold: u64,
}

impl Scenario {
    /// The full demo: about 5 minutes on 2 cores.
    pub fn full() -> Self {
        Self {
            name: "full",
            runs: RunKind::ALL.to_vec(),
            spike: Spike {
                duration: Duration::from_secs(70),
                ramp: Duration::from_secs(35),
                peak_per_s: 20.0,
                play_min: Duration::from_secs(25),
                play_max: Duration::from_secs(45),
            },
            tail: Duration::from_secs(20),
            move_interval: Duration::from_secs(3),
            leaderboard_every: 3,
            redis_maxmemory: 6 * 1024 * 1024,
            session_bytes: 8192,
            session_ttl_s: 10,
            scorer_rate: 65,
            max_hunters: 420,
            // As the field's policy: 28,000 of 50,000 (the law never cuts below it).
            min_hunters: 280,
            retry_after_s: 5,
            drain_threshold: 100,
        }
    }

    /// The smoke test of `make test`: runs b and c, a shorter and steeper spike.
    pub fn smoke() -> Self {
        Self {
            name: "smoke",
            runs: vec![RunKind::Open, RunKind::Huntgate],
            spike: Spike {
                duration: Duration::from_secs(32),
                ramp: Duration::from_secs(14),
                peak_per_s: 24.0,
                play_min: Duration::from_secs(16),
                play_max: Duration::from_secs(26),
            },
            tail: Duration::from_secs(6),
            // Low enough that even at ratio 1.0 the hunt stays under Redis' maxmemory: the
            // smoke test asserts only what the design guarantees, however slow the machine.
            max_hunters: 360,
            ..Self::full()
        }
    }

    /// A preset by name.
    pub fn preset(name: &str) -> anyhow::Result<Self> {
        match name {
            "full" => Ok(Self::full()),
            "smoke" => Ok(Self::smoke()),
            other => anyhow::bail!("unknown preset `{other}` (full or smoke)"),
        }
    }

    /// Length of one run's load phase.
    pub fn run_length(&self) -> Duration {
        self.spike.duration + self.tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_fit_their_budgets() {
        let full = Scenario::full();
        let total = full.run_length().as_secs() * full.runs.len() as u64;
        assert!(total <= 280, "{total}");
        let smoke = Scenario::smoke();
        assert!(smoke.run_length().as_secs() * smoke.runs.len() as u64 <= 80);
        assert!(Scenario::preset("nope").is_err());
        assert_eq!(RunKind::parse("C").ok(), Some(RunKind::Huntgate));
        assert!(RunKind::parse("d").is_err());
    }
}
