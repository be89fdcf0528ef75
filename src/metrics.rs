//! The filter's Envoy stats: process-wide counters every worker increments,
//! and per-hunt gauges only the sweeper worker records.
//!
//! A request makes no stats host call: the counters a request moves are added up per
//! worker and added to Envoy's on the worker's next 1 s tick (and when the
//! configuration they belong to is dropped), so they lag by at most a tick.

use std::cell::Cell;

use hashbrown::HashMap;
use huntgate_core::engine::{Effects, Event, HuntGauge};
use huntgate_core::fetcher::FetchResult;
use huntgate_core::waiting_room::Dropped;

use crate::host::{self, MetricKind};

/// Counter ids of one VM (ids are per VM; the stats behind them are per process).
#[derive(Debug, Default)]
pub struct Metrics {
    admitted: Tallied,
    renewed: Tallied,
    session: Tallied,
    rejected: Tallied,
    shadow_rejected: Tallied,
    bad_request: Tallied,
    untracked_hunt: Tallied,
    ticket_invalid: Tallied,
    store_error: Tallied,
    expired: Option<u32>,
    ended: Tallied,
    tracked_hunts: Option<u32>,
    fetch_ok: Option<u32>,
    fetch_failed: Option<u32>,
    fetch_failures_in_a_row: Option<u32>,
    governor_up: Option<u32>,
    document_age_ms: Option<u32>,
    lease_age_ms: Option<u32>,
    queued: Tallied,
    queue_waiting: Tallied,
    dequeued: Tallied,
    abandoned: Tallied,
    queue_expired: Tallied,
    fleet_ends_recorded: Option<u32>,
    fleet_ends_dropped: Option<u32>,
    ends_unshared: Option<u32>,
    hunt_gauges: HashMap<String, HuntIds>,
    /// Whether some `HuntIds::recorded` may be set (skips the reset walk otherwise).
    gauges_recorded: bool,
}

/// A counter that requests move: its increments are added up in the worker and
/// added to the stat by [`Tallied::flush`] (one host call per tick, not per request).
#[derive(Debug, Default)]
struct Tallied {
    id: Option<u32>,
    pending: Cell<i64>,
}

impl Tallied {
    fn define(name: &str) -> Self {
        Self {
            id: define(MetricKind::Counter, name),
            pending: Cell::new(0),
        }
    }

    fn add(&self, delta: i64) {
        self.pending.set(self.pending.get().saturating_add(delta));
    }

    /// Adds the pending count to the stat; a failed host call keeps it pending
    /// for the next flush (nothing counted is dropped).
    fn flush(&self) {
        let (Some(id), pending) = (self.id, self.pending.get()) else {
            return;
        };
        if pending > 0 && host::increment_metric(id, pending).is_ok() {
            self.pending.set(0);
        }
    }
}

/// One hunt's gauge ids: active, limit, and (for a hunt with a waiting room)
/// queue length and oldest wait.
#[derive(Debug, Clone, Copy, Default)]
struct HuntIds {
    active: Option<u32>,
    limit: Option<u32>,
    queue: Option<(Option<u32>, Option<u32>)>,
    /// The (active, limit) this worker last recorded: unchanged values are not
    /// recorded again (two host calls per gauged hunt and tick saved).
    recorded: Option<(u32, u32)>,
}

fn define(kind: MetricKind, name: &str) -> Option<u32> {
    match host::define_metric(kind, name) {
        Ok(id) => Some(id),
        Err(e) => {
            host::log(host::Level::Warn, &format!("metric {name}: {e}"));
            None
        }
    }
}

fn bump(id: Option<u32>, delta: i64) {
    if let Some(id) = id {
        // A failed increment only loses this sample (the counters requests move
        // go through `Tallied`, which keeps theirs).
        let _ = host::increment_metric(id, delta);
    }
}

fn set(id: Option<u32>, value: u32) {
    if let Some(id) = id {
        let _ = host::record_metric(id, u64::from(value));
    }
}

impl Metrics {
    /// Defines the counters (idempotent per name).
    pub fn define() -> Self {
        use MetricKind::{Counter, Gauge};
        Self {
            admitted: Tallied::define("huntgate_admitted"),
            renewed: Tallied::define("huntgate_renewed"),
            session: Tallied::define("huntgate_session"),
            rejected: Tallied::define("huntgate_rejected"),
            shadow_rejected: Tallied::define("huntgate_shadow_rejected"),
            bad_request: Tallied::define("huntgate_bad_request"),
            untracked_hunt: Tallied::define("huntgate_untracked_hunt"),
            ticket_invalid: Tallied::define("huntgate_ticket_invalid"),
            store_error: Tallied::define("huntgate_store_error"),
            expired: define(Counter, "huntgate_expired"),
            ended: Tallied::define("huntgate_session_ended"),
            tracked_hunts: define(Gauge, "huntgate_tracked_hunts"),
            fetch_ok: define(Counter, "huntgate_governor_fetch_ok"),
            fetch_failed: define(Counter, "huntgate_governor_fetch_failed"),
            fetch_failures_in_a_row: define(Gauge, "huntgate_governor_fetch_failures_in_a_row"),
            governor_up: define(Gauge, "huntgate_governor_up"),
            lease_age_ms: define(Gauge, "huntgate_governor_lease_age_ms"),
            document_age_ms: define(Gauge, "huntgate_governor_document_age_ms"),
            queued: Tallied::define("huntgate_queued"),
            queue_waiting: Tallied::define("huntgate_queue_waiting"),
            dequeued: Tallied::define("huntgate_dequeued"),
            abandoned: Tallied::define("huntgate_queue_abandoned"),
            queue_expired: Tallied::define("huntgate_queue_expired"),
            fleet_ends_recorded: define(Counter, "huntgate_fleet_ends_recorded"),
            fleet_ends_dropped: define(Counter, "huntgate_fleet_ends_dropped"),
            ends_unshared: define(Gauge, "huntgate_ends_unshared"),
            hunt_gauges: HashMap::new(),
            gauges_recorded: false,
        }
    }

    /// Counts one request's outcome (added to the stats on the next tick).
    pub fn record(&self, effects: &Effects) {
        let counter = match effects.event {
            Event::NotHunt => None,
            Event::Session => Some(&self.session),
            Event::Renewed => Some(&self.renewed),
            Event::Admitted => Some(&self.admitted),
            Event::Rejected => Some(&self.rejected),
            Event::ShadowRejected => Some(&self.shadow_rejected),
            Event::BadRequest => Some(&self.bad_request),
            Event::Untracked => Some(&self.untracked_hunt),
            Event::StoreFailed => Some(&self.store_error),
            Event::Left => Some(&self.ended),
            Event::Queued => Some(&self.queue_waiting),
        };
        if let Some(counter) = counter {
            counter.add(1);
        }
        if effects.ticket_refused.is_some() {
            self.ticket_invalid.add(1);
        }
        let queue = &effects.queue;
        if queue.queued > 0 {
            self.queued.add(i64::from(queue.queued));
        }
        if queue.dequeued > 0 {
            self.dequeued.add(i64::from(queue.dequeued));
        }
        self.dropped(queue.dropped);
    }

    /// Counts waiting-room places dropped (by a join or the sweeper).
    pub fn dropped(&self, dropped: Dropped) {
        if dropped.abandoned > 0 {
            self.abandoned.add(i64::from(dropped.abandoned));
        }
        if dropped.expired > 0 {
            self.queue_expired.add(i64::from(dropped.expired));
        }
    }

    /// Adds what requests counted since the last flush to the stats (run at the end
    /// of every tick, and when the configuration is dropped).
    pub fn flush(&self) {
        for counter in [
            &self.admitted,
            &self.renewed,
            &self.session,
            &self.rejected,
            &self.shadow_rejected,
            &self.bad_request,
            &self.untracked_hunt,
            &self.ticket_invalid,
            &self.store_error,
            &self.ended,
            &self.queued,
            &self.queue_waiting,
            &self.dequeued,
            &self.abandoned,
            &self.queue_expired,
        ] {
            counter.flush();
        }
    }

    /// Counts a session ended by the upstream's header.
    pub fn session_ended(&self) {
        self.ended.add(1);
    }

    /// Counts a host failure outside the engine.
    pub fn host_error(&self) {
        self.store_error.add(1);
    }

    /// Counts the fleet ends a lease answer brought: recorded, and left out
    /// because their list was full; `unshared` is this process's ends the
    /// governor has not acknowledged yet.
    pub fn fleet_ends(&self, recorded: usize, dropped: usize, unshared: usize) {
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        if recorded > 0 {
            bump(self.fleet_ends_recorded, count(recorded));
        }
        if dropped > 0 {
            bump(self.fleet_ends_dropped, count(dropped));
        }
        set(
            self.ends_unshared,
            u32::try_from(unshared).unwrap_or(u32::MAX),
        );
    }

    /// Counts a governor fetch that could not be dispatched.
    pub fn fetch_failed(&self) {
        bump(self.fetch_failed, 1);
        set(self.governor_up, 0);
    }

    /// Counts a governor fetch's result; `huntgate_governor_up` is 1 after a
    /// successful fetch, 0 after a failed one (and before the first).
    pub fn fetch_result(&self, result: &FetchResult, failures_in_a_row: u32) {
        match result {
            FetchResult::Failed(_) => {
                bump(self.fetch_failed, 1);
                set(self.governor_up, 0);
            }
            _ => {
                bump(self.fetch_ok, 1);
                set(self.governor_up, 1);
            }
        }
        set(self.fetch_failures_in_a_row, failures_in_a_row);
    }

    /// Records the age of the lease in force (sweeper only; leases on).
    pub fn lease_age(&self, age_ms: Option<u64>) {
        if let (Some(id), Some(age)) = (self.lease_age_ms, age_ms) {
            let _ = host::record_metric(id, age);
        }
    }

    /// Records the age of the governor document in force (sweeper only).
    pub fn document_age(&self, age_ms: Option<u64>) {
        if let (Some(id), Some(age)) = (self.document_age_ms, age_ms) {
            let _ = host::record_metric(id, age);
        }
    }

    /// Records the sweeper's view: expired sessions, tracked hunts, per-hunt gauges.
    /// At most `max_hunts` hunts ever get gauges (Envoy never drops a defined stat,
    /// and slots are reused by new hunts).
    pub fn record_tick(
        &mut self,
        expired: u32,
        tracked: u32,
        gauges: &[HuntGauge],
        max_hunts: u32,
    ) {
        bump(self.expired, i64::from(expired));
        set(self.tracked_hunts, tracked);
        self.gauges_recorded = true;
        for gauge in gauges {
            let known = self.hunt_gauges.contains_key(&gauge.hunt);
            if !known && self.hunt_gauges.len() >= max_hunts as usize {
                continue;
            }
            let ids = self
                .hunt_gauges
                .entry(gauge.hunt.clone())
                .or_insert_with(|| HuntIds {
                    active: define(
                        MetricKind::Gauge,
                        &format!("huntgate_hunt.{}.active", gauge.hunt),
                    ),
                    limit: define(
                        MetricKind::Gauge,
                        &format!("huntgate_hunt.{}.limit", gauge.hunt),
                    ),
                    queue: None,
                    recorded: None,
                });
            if gauge.queue.is_some() && ids.queue.is_none() {
                ids.queue = Some((
                    define(
                        MetricKind::Gauge,
                        &format!("huntgate_hunt.{}.queue_length", gauge.hunt),
                    ),
                    define(
                        MetricKind::Gauge,
                        &format!("huntgate_hunt.{}.queue_oldest_wait_ms", gauge.hunt),
                    ),
                ));
            }
            if let (Some((length, oldest)), Some(values)) = (ids.queue, gauge.queue) {
                set(length, values.length);
                if let Some(id) = oldest {
                    let _ = host::record_metric(id, values.oldest_wait_ms);
                }
            }
            let values = (gauge.active, gauge.limit);
            if ids.recorded != Some(values) {
                set(ids.active, gauge.active);
                set(ids.limit, gauge.limit);
                ids.recorded = Some(values);
            }
        }
    }

    /// Called on a tick where this worker is not the sweeper: another worker
    /// records the gauges meanwhile, so what this one last recorded is no longer
    /// what they show (its next sweeping tick records every value again).
    pub fn forget_recorded_gauges(&mut self) {
        if !std::mem::take(&mut self.gauges_recorded) {
            return;
        }
        for ids in self.hunt_gauges.values_mut() {
            ids.recorded = None;
        }
    }
}

impl Drop for Metrics {
    /// A configuration replaced (its root or last stream context deleted) still
    /// adds what it counted.
    fn drop(&mut self) {
        self.flush();
    }
}
