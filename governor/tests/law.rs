//! Control-law tests with simulated time: the seed story (Hunt-002's fix), hysteresis,
//! floors, pins, stale signals, and the document's versioning.

// Test helpers outside #[test] functions unwrap and panic too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;

use huntgate_governor::clock::secs;
use huntgate_governor::document::ThrottleDocument;
use huntgate_governor::law::{
    due, step, tick, Decision, HuntSpec, HuntState, Knobs, LawState, OnStale, Reason,
};
use huntgate_governor::policy::Policy;
use huntgate_governor::signal::{SignalId, SignalStatus, Signals};

fn redis() -> SignalId {
    SignalId::parse("redis:main").unwrap()
}

fn lag() -> SignalId {
    SignalId::parse("kafka:scorers/hunt-events").unwrap()
}

fn spec(max_hunters: u32, signals: Vec<SignalId>) -> HuntSpec {
    HuntSpec {
        max_hunters,
        min_hunters: 0,
        signals,
        knobs: Knobs::default(),
        pin_ratio: None,
    }
}

fn fresh(pairs: &[(SignalId, f64)]) -> Signals {
    pairs
        .iter()
        .map(|(id, v)| (id.clone(), SignalStatus::Fresh(*v)))
        .collect()
}

/// Drives one hunt through `[from, to)` in 5 s ticks with signals from `at(t)`; returns the
/// decisions by tick time (seconds).
fn run(
    state: &mut HuntState,
    spec: &HuntSpec,
    from_s: u64,
    to_s: u64,
    at: impl Fn(u64) -> Signals,
) -> BTreeMap<u64, Decision> {
    let mut out = BTreeMap::new();
    let mut t = from_s;
    while t < to_s {
        let (next, d) = step(state, spec, &at(t), secs(t));
        *state = next;
        out.insert(t, d);
        t += 5;
    }
    out
}

/// The seed story: 50,000 players join; Redis memory goes above 80 %. The ratio steps
/// 1.0 → 0.9 → 0.8 → 0.7 → 0.6, one step every 30 s while Redis stays above 80 %, holds
/// while it is in the 70–80 % band, and recovers 5 % every 30 s once Redis has stayed
/// below 70 % for 60 s.
#[test]
fn seed_story_50000_hunter_spike() {
    let hunt = spec(50_000, vec![redis()]);
    let memory = |t: u64| match t {
        0..=99 => 0.95,    // the spike: Redis at 95 %
        100..=199 => 0.75, // throttled: Redis back in the hysteresis band
        _ => 0.40,         // the spike is over
    };
    let mut state = HuntState::default();
    let d = run(&mut state, &hunt, 0, 600, |t| {
        fresh(&[(redis(), memory(t))])
    });

    let ratio_at = |t: u64| d[&t].ratio;
    // One cut at once, then one per 30 s while above 80 %.
    assert_eq!(ratio_at(0), 0.9);
    assert!(d[&0].changed);
    for t in [5, 10, 15, 20, 25] {
        assert_eq!(ratio_at(t), 0.9, "no second cut before 30 s (t={t})");
        assert_eq!(d[&t].reason, Reason::RedisMemory);
    }
    assert_eq!(ratio_at(30), 0.8);
    assert_eq!(ratio_at(55), 0.8);
    assert_eq!(ratio_at(60), 0.7);
    assert_eq!(ratio_at(90), 0.6);
    assert_eq!(d[&90].limit, 30_000);
    assert_eq!(d[&90].max_hunters, 50_000);
    // In the band: holds, still explained by Redis memory.
    for t in (100..200).step_by(5) {
        assert_eq!(ratio_at(t), 0.6, "t={t}");
        assert_eq!(d[&t].reason, Reason::RedisMemory);
        assert!(!d[&t].changed);
    }
    // Calm from t=200: waits the 60 s stable period, then +0.05 every 30 s.
    for t in (200..260).step_by(5) {
        assert_eq!(ratio_at(t), 0.6, "t={t}");
        assert_eq!(d[&t].reason, Reason::Recovering);
    }
    let expected = [
        (260, 0.65),
        (290, 0.7),
        (320, 0.75),
        (350, 0.8),
        (380, 0.85),
        (410, 0.9),
        (440, 0.95),
        (470, 1.0),
    ];
    for (t, r) in expected {
        assert_eq!(ratio_at(t), r, "t={t}");
        assert!(d[&t].changed);
        assert_eq!(ratio_at(t + 25), r, "holds between steps (t={})", t + 25);
    }
    assert_eq!(d[&470].limit, 50_000);
    assert_eq!(d[&475].reason, Reason::Stable);
    assert_eq!(ratio_at(595), 1.0);
    // Exactly 4 cuts and 8 recovery steps.
    assert_eq!(d.values().filter(|x| x.changed).count(), 12);
}

/// The same spike against a simple model of Redis, where memory follows the admitted
/// hunters: the ratio stops falling once memory drops out of overload, and memory never
/// again exceeds 80 % while the spike lasts.
#[test]
fn seed_story_closed_loop() {
    let hunt = spec(50_000, vec![redis()]);
    let mut state = HuntState::default();
    let mut peak_after_first_minute: f64 = 0.0;
    let mut limit_during_spike = 0;
    let mut t = 0;
    while t < 900 {
        let demand: u32 = if t < 400 { 50_000 } else { 10_000 };
        let admitted = demand.min(huntgate_core::throttle::effective_limit(
            hunt.max_hunters,
            state.ratio,
        ));
        // 20 % baseline plus 16 bytes-worth per hunter: 50,000 → 100 %, 35,000 → 76 %.
        let memory = 0.2 + 0.000_016 * f64::from(admitted);
        if (65..400).contains(&t) {
            peak_after_first_minute = peak_after_first_minute.max(memory);
        }
        let (next, d) = step(&state, &hunt, &fresh(&[(redis(), memory)]), secs(t));
        state = next;
        if t == 395 {
            limit_during_spike = d.limit;
        }
        t += 5;
    }
    assert_eq!(
        limit_during_spike, 35_000,
        "three cuts, then the band holds"
    );
    assert!(peak_after_first_minute <= 0.80, "{peak_after_first_minute}");
    assert_eq!(state.ratio, 1.0, "recovered after the spike");
}

#[test]
fn cuts_at_most_every_cut_interval() {
    let hunt = spec(1000, vec![redis()]);
    let mut state = HuntState::default();
    let d = run(&mut state, &hunt, 0, 65, |_| fresh(&[(redis(), 0.99)]));
    let cuts: Vec<u64> = d
        .iter()
        .filter(|(_, x)| x.changed)
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(cuts, vec![0, 30, 60]);
}

#[test]
fn hysteresis_band_neither_cuts_nor_recovers() {
    let hunt = spec(1000, vec![redis()]);
    // From 1.0, the band does nothing.
    let mut state = HuntState::default();
    let d = run(&mut state, &hunt, 0, 300, |_| fresh(&[(redis(), 0.79)]));
    assert!(d
        .values()
        .all(|x| x.ratio == 1.0 && x.reason == Reason::Stable));

    // After a cut, calm spells shorter than stable_period_s (60 s) do not count: memory
    // dips below 70 % for 50 s, returns to the band, dips again.
    let mut state = HuntState::default();
    run(&mut state, &hunt, 0, 5, |_| fresh(&[(redis(), 0.9)]));
    assert_eq!(state.ratio, 0.9);
    let memory = |t: u64| if (t / 60) % 2 == 0 { 0.65 } else { 0.72 };
    let d = run(&mut state, &hunt, 5, 600, |t| {
        fresh(&[(redis(), if t < 60 { 0.75 } else { memory(t) })])
    });
    assert!(d.values().all(|x| x.ratio == 0.9), "never recovers");
    // A value exactly at a threshold is in the band (above means >, below means <).
    let (_, x) = step(&state, &hunt, &fresh(&[(redis(), 0.80)]), secs(700));
    assert_eq!((x.ratio, x.reason), (0.9, Reason::RedisMemory));
    let (_, x) = step(&state, &hunt, &fresh(&[(redis(), 0.70)]), secs(705));
    assert_eq!(x.ratio, 0.9);
}

#[test]
fn recovery_needs_every_signal_calm() {
    let hunt = spec(1000, vec![redis(), lag()]);
    let mut state = HuntState::default();
    run(&mut state, &hunt, 0, 5, |_| {
        fresh(&[(redis(), 0.5), (lag(), 5000.0)])
    });
    assert_eq!(state.ratio, 0.9);
    // Redis calm, lag in its band (500..=1000): holds with reason kafka_lag.
    let d = run(&mut state, &hunt, 5, 300, |_| {
        fresh(&[(redis(), 0.5), (lag(), 700.0)])
    });
    assert!(d
        .values()
        .all(|x| x.ratio == 0.9 && x.reason == Reason::KafkaLag));
    // Both calm: recovers after 60 s.
    let d = run(&mut state, &hunt, 300, 400, |_| {
        fresh(&[(redis(), 0.5), (lag(), 100.0)])
    });
    assert_eq!(d[&355].ratio, 0.9);
    assert_eq!(d[&360].ratio, 0.95);
    assert_eq!(d[&390].ratio, 1.0);
}

#[test]
fn kafka_lag_above_threshold_cuts_with_its_reason() {
    let hunt = spec(50_000, vec![redis(), lag()]);
    let mut state = HuntState::default();
    let d = run(&mut state, &hunt, 0, 35, |_| {
        fresh(&[(redis(), 0.1), (lag(), 3000.0)])
    });
    assert_eq!(d[&0].reason, Reason::KafkaLag);
    assert_eq!(d[&30].ratio, 0.8);
    assert_eq!(d[&30].limit, 40_000);
}

#[test]
fn floors_min_ratio_and_min_hunters() {
    let mut hunt = spec(50_000, vec![redis()]);
    hunt.knobs.min_ratio = 0.5;
    let mut state = HuntState::default();
    let d = run(&mut state, &hunt, 0, 600, |_| fresh(&[(redis(), 0.99)]));
    assert_eq!(d[&595].ratio, 0.5);
    assert_eq!(d.values().filter(|x| x.changed).count(), 5);
    assert_eq!(d[&595].reason, Reason::RedisMemory);

    // min_hunters 28,000 of 50,000: the floor is 0.56, the limit never below 28,000.
    let mut hunt = spec(50_000, vec![redis()]);
    hunt.min_hunters = 28_000;
    let mut state = HuntState::default();
    let d = run(&mut state, &hunt, 0, 600, |_| fresh(&[(redis(), 0.99)]));
    assert_eq!(d[&120].ratio, 0.56);
    assert_eq!(d[&595].ratio, 0.56);
    assert_eq!(d[&595].limit, 28_000);
    assert!(d.values().all(|x| x.limit >= 28_000));

    // A floor raised by a policy change lifts a lower ratio at the next tick.
    let mut low = HuntState {
        ratio: 0.2,
        ..HuntState::default()
    };
    let (next, x) = step(&low, &hunt, &fresh(&[(redis(), 0.75)]), secs(1));
    low = next;
    assert_eq!((low.ratio, x.changed), (0.56, true));
}

#[test]
fn pin_fixes_the_ratio_until_removed() {
    let mut hunt = spec(50_000, vec![redis()]);
    hunt.pin_ratio = Some(0.3);
    let mut state = HuntState::default();
    let d = run(&mut state, &hunt, 0, 100, |t| {
        fresh(&[(redis(), if t < 50 { 0.99 } else { 0.1 })])
    });
    assert!(d
        .values()
        .all(|x| x.ratio == 0.3 && x.reason == Reason::Pinned));
    assert_eq!(d[&0].limit, 15_000);
    // Pins may go below the floors.
    hunt.pin_ratio = Some(0.0);
    let (_, x) = step(&state, &hunt, &Signals::new(), secs(100));
    assert_eq!((x.ratio, x.limit), (0.0, 0));
    // Unpinned: the law takes over from the pinned ratio and recovers after 60 s calm.
    hunt.pin_ratio = None;
    let d = run(&mut state, &hunt, 100, 200, |_| fresh(&[(redis(), 0.1)]));
    assert_eq!(d[&100].ratio, 0.3);
    assert_eq!(d[&100].reason, Reason::Recovering);
    assert_eq!(d[&160].ratio, 0.35);
}

#[test]
fn stale_signal_holds_by_default() {
    let hunt = spec(1000, vec![redis(), lag()]);
    let mut state = HuntState::default();
    run(&mut state, &hunt, 0, 5, |_| {
        fresh(&[(redis(), 0.9), (lag(), 0.0)])
    });
    assert_eq!(state.ratio, 0.9);
    // Redis stale (unreachable): no cut and no recovery, whatever the other signal says.
    let d = run(&mut state, &hunt, 5, 300, |_| {
        let mut s = fresh(&[(lag(), 0.0)]);
        s.insert(redis(), SignalStatus::Stale);
        s
    });
    assert!(d
        .values()
        .all(|x| x.ratio == 0.9 && x.reason == Reason::SignalStale));
    // A bound signal never read at all counts as stale too.
    let (_, x) = step(&state, &hunt, &fresh(&[(lag(), 0.0)]), secs(300));
    assert_eq!(x.reason, Reason::SignalStale);
    // An overloaded fresh signal still cuts while another is stale.
    let mut s = fresh(&[(lag(), 5000.0)]);
    s.insert(redis(), SignalStatus::Stale);
    let (next, x) = step(&state, &hunt, &s, secs(305));
    assert_eq!((next.ratio, x.reason), (0.8, Reason::KafkaLag));
}

#[test]
fn stale_signal_as_overloaded_cuts_on_schedule() {
    let mut hunt = spec(1000, vec![redis()]);
    hunt.knobs.on_stale = OnStale::Overloaded;
    let mut state = HuntState::default();
    let d = run(&mut state, &hunt, 0, 65, |_| Signals::new());
    let cuts: Vec<u64> = d
        .iter()
        .filter(|(_, x)| x.changed)
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(cuts, vec![0, 30, 60]);
    assert!(d.values().all(|x| x.reason == Reason::SignalStale));
    assert_eq!(state.ratio, 0.7);
}

#[test]
fn no_bound_signal_means_stable() {
    let hunt = spec(1000, vec![]);
    let mut state = HuntState::default();
    let d = run(&mut state, &hunt, 0, 30, |_| Signals::new());
    assert!(d
        .values()
        .all(|x| x.ratio == 1.0 && x.reason == Reason::Stable));
}

#[test]
fn ratios_land_on_decimal_steps() {
    let mut hunt = spec(10, vec![redis()]);
    hunt.knobs.min_ratio = 0.0;
    hunt.knobs.cut_interval_ms = 0;
    let mut state = HuntState::default();
    let d = run(&mut state, &hunt, 0, 50, |_| fresh(&[(redis(), 0.99)]));
    let ratios: Vec<f64> = d.values().map(|x| x.ratio).collect();
    assert_eq!(
        ratios,
        vec![0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0]
    );
    // floor(max_hunters × ratio) exactly: 10 × 0.3 = 3, not 2.
    assert_eq!((d[&30].ratio, d[&30].limit), (0.3, 3));
}

fn policy_with(hunts: &[(&str, HuntSpec)], default_signals: Vec<SignalId>) -> Policy {
    let mut p = Policy::default();
    p.default.signals = default_signals;
    p.hunts = hunts
        .iter()
        .map(|(h, s)| (h.to_string(), s.clone()))
        .collect();
    p
}

#[test]
fn tick_covers_every_hunt_and_the_default() {
    let policy = policy_with(
        &[
            ("hunt-001", spec(50_000, vec![redis()])),
            ("hunt-002", spec(2000, vec![lag()])),
        ],
        vec![redis()],
    );
    let signals = fresh(&[(redis(), 0.95), (lag(), 10.0)]);
    let (state, d) = tick(&LawState::default(), &policy, &signals, 0);
    assert_eq!(d.hunts["hunt-001"].ratio, 0.9);
    assert_eq!(d.hunts["hunt-002"].ratio, 1.0);
    assert_eq!(
        d.default.ratio, 0.9,
        "unlisted hunts follow the default signals"
    );

    // govern_unlisted: false keeps the default at 1.0.
    let mut fixed = policy.clone();
    fixed.govern_unlisted = false;
    let (_, d2) = tick(&LawState::default(), &fixed, &signals, 0);
    assert_eq!((d2.default.ratio, d2.default.reason), (1.0, Reason::Stable));

    // A hunt removed from the policy drops its state; re-added it starts at 1.0.
    let only_two = policy_with(&[("hunt-002", spec(2000, vec![lag()]))], vec![]);
    let (state, _) = tick(&state, &only_two, &signals, secs(5));
    assert!(!state.hunts.contains_key("hunt-001"));
    let (_, d3) = tick(
        &state,
        &policy,
        &fresh(&[(redis(), 0.75), (lag(), 10.0)]),
        secs(10),
    );
    assert_eq!(d3.hunts["hunt-001"].ratio, 1.0);
}

#[test]
fn document_version_moves_only_on_change_or_reload() {
    let policy = policy_with(&[("hunt-001", spec(50_000, vec![redis()]))], vec![]);
    let doc0 = ThrottleDocument::initial(100, 0, 10);
    let calm = fresh(&[(redis(), 0.75)]);
    let (state, d) = tick(&LawState::default(), &policy, &calm, 0);
    let doc1 = doc0.next(&d, 10, 0, false);
    assert_eq!(doc1.version, 101, "first entries are a change");
    let (state, d) = tick(&state, &policy, &calm, 5_000);
    let doc2 = doc1.next(&d, 10, 5_000, false);
    assert_eq!(doc2.version, 101);
    assert_eq!(doc2.generated_at_ms, 5_000);
    let doc3 = doc2.next(&d, 10, 10_000, true);
    assert_eq!(doc3.version, 102, "a reload bumps the version");
    let (_, d) = tick(&state, &policy, &fresh(&[(redis(), 0.9)]), 15_000);
    let doc4 = doc3.next(&d, 10, 15_000, false);
    assert_eq!(doc4.version, 103);
    assert_eq!(doc4.hunts["hunt-001"].limit, 45_000);
    assert_eq!(doc4.etag(), "\"103\"");
}

/// Evaluation times `k × period + jitter(k)` in ms: ticks land a millisecond early or late
/// (`.649` / `.650` / `.652`), as the wall clock read at each tokio tick does.
fn jittered(period_ms: u64, k: u64) -> u64 {
    const T0: u64 = 1_800_000_000_650;
    let jitter: [i64; 5] = [0, -1, 0, 2, -1];
    let j = jitter[(k % 5) as usize];
    (T0 + k * period_ms).saturating_add_signed(j)
}

/// Issue 11, defect 1: with ticks jittered by ±2 ms, cuts came 3, 3, 4, 3 s apart (a tick
/// 1 ms early was refused). On the evaluation grid every step lands exactly on schedule.
#[test]
fn cut_lands_exactly_on_schedule_with_jittered_ticks() {
    let mut hunt = spec(1000, vec![redis()]);
    hunt.knobs.eval_period_ms = 1000;
    hunt.knobs.cut_interval_ms = secs(3);
    hunt.knobs.recover_interval_ms = secs(2);
    hunt.knobs.stable_period_ms = secs(5);
    hunt.knobs.min_ratio = 0.0;
    hunt.knobs.cut_step = 0.05;
    hunt.knobs.recover_step = 0.05;
    let mut state = HuntState::default();
    let mut changes: Vec<(u64, f64)> = Vec::new();
    for k in 0..80 {
        let memory = if k < 40 { 0.95 } else { 0.1 };
        let (next, d) = step(
            &state,
            &hunt,
            &fresh(&[(redis(), memory)]),
            jittered(1000, k),
        );
        if d.changed {
            changes.push((k, d.ratio));
        }
        state = next;
    }
    let cuts: Vec<u64> = changes
        .iter()
        .filter(|(k, _)| *k < 40)
        .map(|c| c.0)
        .collect();
    assert_eq!(
        cuts,
        (0..40).step_by(3).collect::<Vec<_>>(),
        "a cut every 3rd evaluation"
    );
    // Calm from evaluation 40: the 5 s stable period ends at 45, then a step every 2.
    let raises: Vec<u64> = changes
        .iter()
        .filter(|(k, _)| *k >= 40)
        .map(|c| c.0)
        .collect();
    assert_eq!(raises, (45..=71).step_by(2).collect::<Vec<_>>());
    assert_eq!(state.ratio, 1.0);

    // The demo's 1 s cuts with 1 s evaluations: every due cut is taken (10 of 10).
    let mut demo = spec(1000, vec![redis()]);
    demo.knobs.eval_period_ms = 1000;
    demo.knobs.cut_interval_ms = secs(1);
    demo.knobs.cut_step = 0.05;
    let mut state = HuntState::default();
    let mut cuts = 0;
    for k in 0..10 {
        let (next, d) = step(&state, &demo, &fresh(&[(redis(), 0.95)]), jittered(1000, k));
        cuts += u32::from(d.changed);
        state = next;
    }
    assert_eq!(cuts, 10);

    // Production: 5 s evaluations, 30 s cuts: exactly 30 s apart, never 35.
    let prod = spec(50_000, vec![redis()]);
    let mut state = HuntState::default();
    let mut at = Vec::new();
    for k in 0..40 {
        let (next, d) = step(&state, &prod, &fresh(&[(redis(), 0.95)]), jittered(5000, k));
        if d.changed {
            at.push(k);
        }
        state = next;
    }
    assert_eq!(at, vec![0, 6, 12, 18, 24, 30, 36]);
}

#[test]
fn intervals_off_the_grid_land_on_the_next_evaluation() {
    // 30 s with 7 s evaluations: due at 35 s (5 evaluations), never at 28 s.
    assert!(!due(Some(0), 28_000, secs(30), 7000));
    assert!(due(Some(0), 35_000 - 3, secs(30), 7000));
    // Half a period of tolerance at most.
    assert!(!due(Some(0), 2_499, secs(3), 1000));
    assert!(due(Some(0), 2_500, secs(3), 1000));
    assert!(due(None, 0, secs(3), 1000));
    assert!(due(Some(5), 5, 0, 1000));
}
