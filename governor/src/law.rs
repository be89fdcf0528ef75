//! The control law: a pure function from (state, policy, signals, now) to the next state and
//! one decision per hunt. No I/O, no clock: tests drive it with simulated time.
//!
//! Per hunt, at every tick (every `eval_period_s`):
//! 1. **pinned** — an operator `pin_ratio` fixes the ratio.
//! 2. **overloaded** — some bound signal is above its high threshold (`redis_memory_high`,
//!    `kafka_lag_high`), or a stale signal with `on_stale: overloaded`: the ratio is cut by
//!    `cut_step` at once and then at most every `cut_interval_s` while the overload lasts,
//!    never below the floor `max(min_ratio, min_hunters / max_hunters)`.
//! 3. **stale** (with `on_stale: hold`) — the ratio holds. A signal not read yet within
//!    `stale_after_s` of being bound (the start-up grace) holds it too, whatever `on_stale`.
//! 4. **in the hysteresis band** — a signal between its low and high thresholds: the ratio holds.
//! 5. **calm** — every bound signal below its low threshold (`redis_memory_low`,
//!    `kafka_lag_low`): once calm has lasted `stable_period_s`, the ratio rises by
//!    `recover_step` at most every `recover_interval_s`, up to 1.0.
//!
//! Every interval is counted on the evaluation grid ([`due`]), so steps land exactly on
//! schedule although the wall clock read at each tick jitters by a millisecond.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::{secs, Millis};
use crate::policy::Policy;
use crate::signal::{SignalId, SignalKind, SignalStatus, Signals};

/// Why a hunt has the ratio it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Redis memory is (or stays) above its threshold.
    RedisMemory,
    /// Kafka consumer lag is (or stays) above its threshold.
    KafkaLag,
    /// Every signal is calm and the ratio is on its way back to 1.0.
    Recovering,
    /// Nothing to do: the ratio is 1.0 and no signal is overloaded.
    Stable,
    /// A bound signal is stale; the ratio holds (or falls with `on_stale: overloaded`).
    SignalStale,
    /// An operator pinned the ratio.
    Pinned,
}

impl Reason {
    /// Every reason, in the order metrics list them.
    pub const ALL: [Reason; 6] = [
        Reason::RedisMemory,
        Reason::KafkaLag,
        Reason::Recovering,
        Reason::Stable,
        Reason::SignalStale,
        Reason::Pinned,
    ];

    /// The wire name (`redis_memory`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::RedisMemory => "redis_memory",
            Reason::KafkaLag => "kafka_lag",
            Reason::Recovering => "recovering",
            Reason::Stable => "stable",
            Reason::SignalStale => "signal_stale",
            Reason::Pinned => "pinned",
        }
    }

    /// Position in [`Reason::ALL`].
    pub fn index(self) -> usize {
        match self {
            Reason::RedisMemory => 0,
            Reason::KafkaLag => 1,
            Reason::Recovering => 2,
            Reason::Stable => 3,
            Reason::SignalStale => 4,
            Reason::Pinned => 5,
        }
    }

    fn of_kind(kind: SignalKind) -> Self {
        match kind {
            SignalKind::RedisMemory => Reason::RedisMemory,
            SignalKind::KafkaLag => Reason::KafkaLag,
        }
    }
}

/// What a stale signal does to the ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStale {
    /// Hold the ratio where it is (no cut, no recovery) until the signal is fresh again.
    #[default]
    Hold,
    /// Treat the stale signal as overloaded: cut on schedule.
    Overloaded,
}

/// The control knobs of one hunt (compiled, validated; times in milliseconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Knobs {
    /// Ratio removed per cut (0.10 = 10 % of max_hunters).
    pub cut_step: f64,
    /// Least time between two cuts.
    pub cut_interval_ms: Millis,
    /// Ratio added per recovery step.
    pub recover_step: f64,
    /// Least time between two recovery steps.
    pub recover_interval_ms: Millis,
    /// How long every signal must stay calm before the first recovery step.
    pub stable_period_ms: Millis,
    /// Lowest ratio the law sets (operator pins may go lower).
    pub min_ratio: f64,
    /// Redis memory fraction above which the hunt is overloaded.
    pub redis_memory_high: f64,
    /// Redis memory fraction below which Redis counts as calm.
    pub redis_memory_low: f64,
    /// Kafka lag (messages) above which the hunt is overloaded.
    pub kafka_lag_high: f64,
    /// Kafka lag (messages) below which Kafka counts as calm.
    pub kafka_lag_low: f64,
    /// What a stale signal does.
    pub on_stale: OnStale,
    /// The evaluation period (`eval_period_s` of defaults.yaml). Intervals are counted on
    /// this grid: an interval is due at the first evaluation that is at least the interval
    /// after the last step, with half a period of tolerance for tick jitter (see [`due`]).
    pub eval_period_ms: Millis,
}

impl Default for Knobs {
    /// The policy that fixed Hunt-002: cut 10 % every 30 s above 80 % Redis memory or 1000
    /// messages of lag; recover 5 % every 30 s after 60 s below 70 % / 500.
    fn default() -> Self {
        Self {
            cut_step: 0.10,
            cut_interval_ms: secs(30),
            recover_step: 0.05,
            recover_interval_ms: secs(30),
            stable_period_ms: secs(60),
            min_ratio: 0.10,
            redis_memory_high: 0.80,
            redis_memory_low: 0.70,
            kafka_lag_high: 1000.0,
            kafka_lag_low: 500.0,
            on_stale: OnStale::Hold,
            eval_period_ms: secs(5),
        }
    }
}

impl Knobs {
    /// (high, low) thresholds for a kind of signal.
    pub fn thresholds(&self, kind: SignalKind) -> (f64, f64) {
        match kind {
            SignalKind::RedisMemory => (self.redis_memory_high, self.redis_memory_low),
            SignalKind::KafkaLag => (self.kafka_lag_high, self.kafka_lag_low),
        }
    }
}

/// Everything the law needs about one hunt (or about unlisted hunts, for `default_ratio`).
#[derive(Debug, Clone, PartialEq)]
pub struct HuntSpec {
    /// The hunt's full capacity; the limit is floor(max_hunters × ratio).
    pub max_hunters: u32,
    /// Floor on the limit, in hunters.
    pub min_hunters: u32,
    /// Signals that govern this hunt.
    pub signals: Vec<SignalId>,
    /// Control knobs.
    pub knobs: Knobs,
    /// Operator pin: a fixed ratio in [0, 1].
    pub pin_ratio: Option<f64>,
}

impl HuntSpec {
    /// The lowest ratio the law sets: max(min_ratio, min_hunters / max_hunters), at most 1.
    pub fn floor_ratio(&self) -> f64 {
        let by_hunters = if self.max_hunters == 0 {
            0.0
        } else {
            f64::from(self.min_hunters) / f64::from(self.max_hunters)
        };
        self.knobs.min_ratio.max(by_hunters).clamp(0.0, 1.0)
    }
}

/// The law's memory for one hunt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HuntState {
    /// The ratio in force.
    pub ratio: f64,
    /// When the ratio was last cut.
    pub last_cut_ms: Option<Millis>,
    /// When the ratio last rose.
    pub last_raise_ms: Option<Millis>,
    /// Since when every bound signal has been calm (None: not calm now).
    pub calm_since_ms: Option<Millis>,
    /// The reason of the latest decision (kept while a signal awaits its first read).
    pub reason: Reason,
}

impl Default for HuntState {
    fn default() -> Self {
        Self {
            ratio: 1.0,
            last_cut_ms: None,
            last_raise_ms: None,
            calm_since_ms: None,
            reason: Reason::Stable,
        }
    }
}

/// The law's memory for every hunt.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LawState {
    /// State of the controller behind `default_ratio` (hunts without a policy file).
    pub default: HuntState,
    /// State per hunt with a policy file, by canonical hunt id.
    pub hunts: BTreeMap<String, HuntState>,
}

/// The outcome for one hunt at one tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// The ratio in force after this tick.
    pub ratio: f64,
    /// The hunt's max_hunters.
    pub max_hunters: u32,
    /// floor(max_hunters × ratio).
    pub limit: u32,
    /// Why.
    pub reason: Reason,
    /// Whether this tick changed the ratio.
    pub changed: bool,
}

/// The outcome of one tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Decisions {
    /// For hunts without a policy file (`default_ratio`).
    pub default: Decision,
    /// Per hunt with a policy file.
    pub hunts: BTreeMap<String, Decision>,
}

/// Rounds to 1e-6 so repeated steps land on the decimal values operators expect
/// (1.0 − 4 × 0.1 is 0.6, not 0.6000000000000001).
pub fn round_ratio(r: f64) -> f64 {
    (r * 1e6).round() / 1e6
}

/// How one bound signal stands against its thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pressure {
    Over(SignalKind),
    Band(SignalKind),
    Calm,
    Pending,
    Stale,
}

fn pressure(id: &SignalId, signals: &Signals, knobs: &Knobs) -> Pressure {
    match signals.get(id) {
        Some(SignalStatus::Fresh(v)) => {
            let (high, low) = knobs.thresholds(id.kind());
            if *v > high {
                Pressure::Over(id.kind())
            } else if *v < low {
                Pressure::Calm
            } else {
                Pressure::Band(id.kind())
            }
        }
        Some(SignalStatus::Pending) => Pressure::Pending,
        Some(SignalStatus::Stale) | None => Pressure::Stale,
    }
}

/// Whether `interval` has passed since `since` (or nothing happened yet), counted on the
/// evaluation grid of `period`: the time elapsed is rounded to the nearest whole number of
/// periods, so a tick that lands a millisecond early (`.649` after `.650`) still counts as
/// the scheduled one, and a step is never taken more than half a period early.
///
/// With `cut_interval_s: 30` and `eval_period_s: 5` a cut lands exactly every 6th evaluation;
/// an interval that is not a multiple of the period lands on the first evaluation after it
/// (30 s with 7 s evaluations: every 5th, 35 s).
pub fn due(since: Option<Millis>, now: Millis, interval: Millis, period: Millis) -> bool {
    let Some(t) = since else {
        return true;
    };
    let elapsed = now.saturating_sub(t);
    if period == 0 {
        return elapsed >= interval;
    }
    let periods = elapsed.saturating_add(period / 2) / period;
    periods.saturating_mul(period) >= interval
}

/// One hunt's step: the next state and the decision.
pub fn step(
    state: &HuntState,
    spec: &HuntSpec,
    signals: &Signals,
    now: Millis,
) -> (HuntState, Decision) {
    let knobs = &spec.knobs;
    let before = state.ratio;
    let mut next = *state;
    let decide = |mut next: HuntState, reason: Reason| {
        next.reason = reason;
        let decision = Decision {
            ratio: next.ratio,
            max_hunters: spec.max_hunters,
            limit: huntgate_core::throttle::effective_limit(spec.max_hunters, next.ratio),
            reason,
            changed: next.ratio != before,
        };
        (next, decision)
    };

    if let Some(pin) = spec.pin_ratio {
        next = HuntState {
            ratio: round_ratio(pin.clamp(0.0, 1.0)),
            ..HuntState::default()
        };
        return decide(next, Reason::Pinned);
    }

    let floor = spec.floor_ratio();
    next.ratio = round_ratio(next.ratio.clamp(floor, 1.0));

    let pressures: Vec<Pressure> = spec
        .signals
        .iter()
        .map(|id| pressure(id, signals, knobs))
        .collect();
    let over = pressures.iter().find_map(|p| match p {
        Pressure::Over(kind) => Some(*kind),
        _ => None,
    });
    let any_stale = pressures.contains(&Pressure::Stale);
    let band = pressures.iter().find_map(|p| match p {
        Pressure::Band(kind) => Some(*kind),
        _ => None,
    });

    if over.is_some() || (any_stale && knobs.on_stale == OnStale::Overloaded) {
        next.calm_since_ms = None;
        let reason = over.map_or(Reason::SignalStale, Reason::of_kind);
        if next.ratio > floor
            && due(
                next.last_cut_ms,
                now,
                knobs.cut_interval_ms,
                knobs.eval_period_ms,
            )
        {
            next.ratio = round_ratio((next.ratio - knobs.cut_step).max(floor));
            next.last_cut_ms = Some(now);
            next.last_raise_ms = None;
        }
        return decide(next, reason);
    }
    if any_stale {
        next.calm_since_ms = None;
        return decide(next, Reason::SignalStale);
    }
    if pressures.contains(&Pressure::Pending) {
        // Start-up grace: a signal not read yet holds the ratio (restored from the state
        // file, or 1.0) with the reason it had, until it is read or goes stale.
        next.calm_since_ms = None;
        let reason = if next.ratio >= 1.0 {
            Reason::Stable
        } else {
            state.reason
        };
        return decide(next, reason);
    }
    if let Some(kind) = band {
        next.calm_since_ms = None;
        let reason = if next.ratio < 1.0 {
            Reason::of_kind(kind)
        } else {
            Reason::Stable
        };
        return decide(next, reason);
    }

    // Every bound signal is calm (or none is bound).
    let calm_since = *next.calm_since_ms.get_or_insert(now);
    if next.ratio >= 1.0 {
        return decide(next, Reason::Stable);
    }
    let period = knobs.eval_period_ms;
    if due(Some(calm_since), now, knobs.stable_period_ms, period)
        && due(next.last_raise_ms, now, knobs.recover_interval_ms, period)
    {
        next.ratio = round_ratio((next.ratio + knobs.recover_step).min(1.0));
        next.last_raise_ms = Some(now);
    }
    decide(next, Reason::Recovering)
}

/// One tick over every hunt of the policy. Hunts that left the policy drop their state;
/// new hunts start at ratio 1.0.
pub fn tick(
    state: &LawState,
    policy: &Policy,
    signals: &Signals,
    now: Millis,
) -> (LawState, Decisions) {
    let (default_state, default_decision) = if policy.govern_unlisted {
        step(&state.default, &policy.default, signals, now)
    } else {
        let unlisted = HuntSpec {
            signals: Vec::new(),
            pin_ratio: Some(1.0),
            ..policy.default.clone()
        };
        let (s, mut d) = step(&state.default, &unlisted, signals, now);
        d.reason = Reason::Stable;
        (s, d)
    };
    let mut next = LawState {
        default: default_state,
        hunts: BTreeMap::new(),
    };
    let mut hunts = BTreeMap::new();
    for (hunt, spec) in &policy.hunts {
        let prev = state.hunts.get(hunt).copied().unwrap_or_default();
        let (s, d) = step(&prev, spec, signals, now);
        next.hunts.insert(hunt.clone(), s);
        hunts.insert(hunt.clone(), d);
    }
    (
        next,
        Decisions {
            default: default_decision,
            hunts,
        },
    )
}
