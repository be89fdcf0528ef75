//! Properties of the control law (issue 13, §2) over random signal histories, knobs and
//! tick jitter: the ratio never leaves [floor, 1]; it moves at most one step per tick, a cut
//! by at most `cut_step`, a raise by at most `recover_step`; two cuts are always at least
//! `cut_interval_s` apart on the evaluation grid, and two raises of one recovery (no cut
//! between them) at least `recover_interval_s`;
//! and once every signal is calm long enough, the ratio is back at 1.0.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use huntgate_governor::clock::Millis;
use huntgate_governor::law::{due, step, HuntSpec, HuntState, Knobs, OnStale};
use huntgate_governor::signal::{SignalId, SignalStatus, Signals};
use proptest::prelude::*;

const PERIOD: Millis = 5_000;
const T0: Millis = 1_800_000_000_000;
/// Rounding of ratios (the law rounds to 1e-6).
const EPS: f64 = 2e-6;

/// What the one signal reads at a tick.
#[derive(Debug, Clone, Copy)]
enum Reading {
    Overloaded,
    Band,
    Calm,
    Stale,
    Pending,
}

fn reading() -> impl Strategy<Value = Reading> {
    prop_oneof![
        3 => Just(Reading::Overloaded),
        1 => Just(Reading::Band),
        3 => Just(Reading::Calm),
        1 => Just(Reading::Stale),
        1 => Just(Reading::Pending),
    ]
}

fn spec() -> impl Strategy<Value = HuntSpec> {
    (
        (1u32..=20, 1u32..=20),
        (0u64..=24, 0u64..=24, 0u64..=24),
        0u32..=90,
        (1u32..=2000, 0u32..=2000),
        any::<bool>(),
    )
        .prop_map(
            |((cut, recover), (cut_i, recover_i, stable), min_ratio, (max, min), overloaded)| {
                let knobs = Knobs {
                    cut_step: f64::from(cut) * 0.025,
                    recover_step: f64::from(recover) * 0.0125,
                    cut_interval_ms: cut_i * PERIOD,
                    recover_interval_ms: recover_i * PERIOD,
                    stable_period_ms: stable * PERIOD,
                    min_ratio: f64::from(min_ratio) / 100.0,
                    on_stale: if overloaded {
                        OnStale::Overloaded
                    } else {
                        OnStale::Hold
                    },
                    eval_period_ms: PERIOD,
                    ..Knobs::default()
                };
                HuntSpec {
                    max_hunters: max,
                    min_hunters: min.min(max),
                    signals: vec![SignalId::parse("redis:main").unwrap()],
                    knobs,
                    pin_ratio: None,
                }
            },
        )
}

fn signals(r: Reading) -> Signals {
    let status = match r {
        Reading::Overloaded => SignalStatus::Fresh(0.95),
        Reading::Band => SignalStatus::Fresh(0.75),
        Reading::Calm => SignalStatus::Fresh(0.40),
        Reading::Stale => SignalStatus::Stale,
        Reading::Pending => SignalStatus::Pending,
    };
    Signals::from([(SignalId::parse("redis:main").unwrap(), status)])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_law_stays_in_bounds_steps_on_schedule_and_recovers_when_calm(
        spec in spec(),
        history in prop::collection::vec((reading(), -400i64..=400), 1..120),
    ) {
        let floor = spec.floor_ratio();
        let knobs = spec.knobs;
        let mut state = HuntState::default();
        let mut now = T0;
        let (mut last_cut, mut last_raise): (Option<Millis>, Option<Millis>) = (None, None);
        let mut check = |before: f64, state: &HuntState, now: Millis| {
            let after = state.ratio;
            prop_assert!(after <= 1.0 + EPS && after >= floor - EPS,
                "ratio {after} outside [{floor}, 1] at {now}");
            if after < before - EPS {
                prop_assert!(before - after <= knobs.cut_step + EPS, "cut {before} → {after}");
                if let Some(t) = last_cut {
                    prop_assert!(due(Some(t), now, knobs.cut_interval_ms, PERIOD),
                        "two cuts {} ms apart, interval {}", now - t, knobs.cut_interval_ms);
                }
                last_cut = Some(now);
                // A cut ends the recovery: the next one starts over from calm.
                last_raise = None;
            }
            if after > before + EPS {
                prop_assert!(after - before <= knobs.recover_step + EPS, "raise {before} → {after}");
                if let Some(t) = last_raise {
                    prop_assert!(due(Some(t), now, knobs.recover_interval_ms, PERIOD),
                        "two raises {} ms apart, interval {}", now - t, knobs.recover_interval_ms);
                }
                last_raise = Some(now);
            }
            Ok(())
        };
        for (reading, jitter) in &history {
            now = now.saturating_add_signed(PERIOD as i64 + jitter);
            let before = state.ratio;
            state = step(&state, &spec, &signals(*reading), now).0;
            check(before, &state, now)?;
        }
        // Calm from here: the stable period, then one raise per interval up to 1.0.
        let steps = ((1.0 - floor) / knobs.recover_step).ceil() as u64 + 1;
        let needed = knobs.stable_period_ms
            + steps * knobs.recover_interval_ms.max(PERIOD)
            + 4 * PERIOD;
        let calm_until = now + needed;
        while now < calm_until {
            now += PERIOD;
            let before = state.ratio;
            state = step(&state, &spec, &signals(Reading::Calm), now).0;
            check(before, &state, now)?;
        }
        prop_assert!((state.ratio - 1.0).abs() <= EPS,
            "still at {} after {} ms of calm", state.ratio, needed);
    }
}
