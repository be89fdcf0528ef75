//! The published snapshot (and the fleet allocation) as API messages: pure.

use std::collections::BTreeMap;

use super::pb;
use crate::fleet::HuntView;
use crate::governor::Snapshot;
use crate::law::{HuntSpec, Knobs};
use crate::operator::{self, Mode};
use crate::signal::SignalStatus;

/// Millis as the wire's signed integer.
fn ms(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

fn mode(m: Mode) -> pb::Mode {
    match m {
        Mode::Keep => pb::Mode::Unspecified,
        Mode::Governed => pb::Mode::Governed,
        Mode::Pinned => pb::Mode::Pinned,
        Mode::Open => pb::Mode::Open,
        Mode::Closed => pb::Mode::Closed,
    }
}

/// The operator mode of a wire value (unknown values are refused naming `mode`).
pub fn mode_of(value: i32) -> Result<Mode, operator::OperatorError> {
    match pb::Mode::try_from(value) {
        Ok(pb::Mode::Unspecified) => Ok(Mode::Keep),
        Ok(pb::Mode::Governed) => Ok(Mode::Governed),
        Ok(pb::Mode::Pinned) => Ok(Mode::Pinned),
        Ok(pb::Mode::Open) => Ok(Mode::Open),
        Ok(pb::Mode::Closed) => Ok(Mode::Closed),
        Err(_) => Err(operator::OperatorError::Invalid {
            field: "mode",
            problem: format!("{value} is not a Mode"),
        }),
    }
}

fn knobs(k: &Knobs) -> pb::Knobs {
    let s = |t: u64| t as f64 / 1000.0;
    pb::Knobs {
        cut_step: k.cut_step,
        cut_interval_s: s(k.cut_interval_ms),
        recover_step: k.recover_step,
        recover_interval_s: s(k.recover_interval_ms),
        stable_period_s: s(k.stable_period_ms),
        min_ratio: k.min_ratio,
        redis_memory_high: k.redis_memory_high,
        redis_memory_low: k.redis_memory_low,
        kafka_lag_high: k.kafka_lag_high,
        kafka_lag_low: k.kafka_lag_low,
    }
}

fn signals(snapshot: &Snapshot, spec: &HuntSpec) -> Vec<pb::Signal> {
    let now = snapshot.document.generated_at_ms;
    spec.signals
        .iter()
        .map(|id| {
            let (high, low) = spec.knobs.thresholds(id.kind());
            let report = snapshot.signals.iter().find(|r| &r.id == id);
            let (value, state, age_s, error) = match report {
                None => (None, "pending", 0.0, String::new()),
                Some(r) => {
                    let status = r.health.status(now, snapshot.policy.stale_after_ms);
                    let state = match status {
                        SignalStatus::Pending => "pending",
                        SignalStatus::Stale => "stale",
                        SignalStatus::Fresh(v) if v > high => "overloaded",
                        SignalStatus::Fresh(v) if v < low => "calm",
                        SignalStatus::Fresh(_) => "band",
                    };
                    let error = match (&r.health.last_error, r.health.up) {
                        (Some(e), false) => e.to_string(),
                        _ => String::new(),
                    };
                    (r.health.last_value, state, r.age_s, error)
                }
            };
            pb::Signal {
                id: id.to_string(),
                value,
                state: state.to_owned(),
                high,
                low,
                age_s,
                error,
            }
        })
        .collect()
}

fn fleet(view: &HuntView) -> pb::Fleet {
    pb::Fleet {
        limit: view.limit,
        active: view.active,
        held: view.held,
        proxies: u32::try_from(view.proxies_known).unwrap_or(u32::MAX),
        shares: view
            .proxies
            .iter()
            .map(|(proxy, p)| pb::ProxyShare {
                proxy: proxy.clone(),
                share: p.share,
                active: p.active,
                silent: p.silent,
            })
            .collect(),
    }
}

/// Every hunt the snapshot knows (governed, or ended with a policy file), by id.
pub fn hunt_ids(snapshot: &Snapshot) -> Vec<String> {
    let mut ids: Vec<String> = snapshot.policy.hunts.keys().cloned().collect();
    ids.extend(
        snapshot
            .operator
            .hunts
            .iter()
            .filter(|(h, c)| c.ended && !snapshot.policy.hunts.contains_key(*h))
            .map(|(h, _)| h.clone()),
    );
    ids.sort();
    ids
}

/// One hunt, or `None` if the snapshot does not know it.
pub fn hunt(
    snapshot: &Snapshot,
    fleets: &BTreeMap<String, HuntView>,
    id: &str,
) -> Option<pb::Hunt> {
    let control = snapshot.operator.hunts.get(id);
    let ended = control.is_some_and(|c| c.ended);
    let spec = snapshot
        .policy
        .hunts
        .get(id)
        .or_else(|| snapshot.files.hunts.get(id).filter(|_| ended))?;
    let entry = snapshot.document.hunts.get(id);
    let (ratio, limit, reason) = match entry {
        Some(e) => (e.ratio, e.limit, e.reason.as_str().to_owned()),
        None if ended => (0.0, 0, "ended".to_owned()),
        None => (1.0, spec.max_hunters, "pending".to_owned()),
    };
    Some(pb::Hunt {
        hunt: id.to_owned(),
        max_hunters: spec.max_hunters,
        min_hunters: spec.min_hunters,
        ratio,
        limit,
        reason,
        source: operator::source(&snapshot.files, id).to_owned(),
        policy: snapshot.files.hunts.get(id).map(|f| pb::PolicyValues {
            max_hunters: f.max_hunters,
            min_hunters: f.min_hunters,
            pin_ratio: f.pin_ratio,
        }),
        started: control
            .and_then(|c| c.started.as_ref())
            .map(|s| pb::StartedValues {
                max_hunters: s.max_hunters,
                min_hunters: s.min_hunters,
                by: s.by.clone(),
                at_ms: ms(s.at_ms),
                reason: s.reason.clone(),
            }),
        r#override: control
            .and_then(|c| c.overrides.as_ref())
            .map(|o| pb::Override {
                max_hunters: o.max_hunters,
                min_hunters: o.min_hunters,
                pin_ratio: o.pin_ratio,
                mode: mode(o.mode) as i32,
                reason: o.reason.clone(),
                by: o.by.clone(),
                at_ms: ms(o.at_ms),
                expires_at_ms: o.expires_at_ms.map(ms),
            }),
        ended,
        signals: signals(snapshot, spec),
        fleet: fleets.get(id).map(fleet),
        steps: snapshot
            .history
            .get(id)
            .map(|steps| {
                steps
                    .iter()
                    .map(|s| pb::Step {
                        at_ms: ms(s.at_ms),
                        from_ratio: s.from,
                        to_ratio: s.to,
                        reason: s.reason.as_str().to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        knobs: Some(knobs(&spec.knobs)),
    })
}

/// A hunt nothing governs any more (its API-only override was just cleared), as
/// unlisted hunts are: the default spec's max_hunters at `default_ratio`.
pub fn unlisted(snapshot: &Snapshot, id: &str) -> pb::Hunt {
    let spec = &snapshot.policy.default;
    let ratio = snapshot.document.default_ratio;
    pb::Hunt {
        hunt: id.to_owned(),
        max_hunters: spec.max_hunters,
        min_hunters: spec.min_hunters,
        ratio,
        limit: huntgate_core::throttle::effective_limit(spec.max_hunters, ratio),
        reason: "unlisted".to_owned(),
        source: "default".to_owned(),
        signals: signals(snapshot, spec),
        knobs: Some(knobs(&spec.knobs)),
        ..pb::Hunt::default()
    }
}

/// Every hunt (or those of `only`, when not empty).
pub fn hunts(
    snapshot: &Snapshot,
    fleets: &BTreeMap<String, HuntView>,
    only: &[String],
) -> Vec<pb::Hunt> {
    hunt_ids(snapshot)
        .iter()
        .filter(|h| only.is_empty() || only.contains(h))
        .filter_map(|h| hunt(snapshot, fleets, h))
        .collect()
}

/// One audit entry.
pub fn audit(entry: &operator::AuditEntry) -> pb::AuditEntry {
    pb::AuditEntry {
        at_ms: ms(entry.at_ms),
        by: entry.by.clone(),
        action: entry.action.clone(),
        hunt: entry.hunt.clone(),
        reason: entry.reason.clone(),
        detail: entry.detail.clone(),
        replica: entry.replica.clone(),
    }
}
