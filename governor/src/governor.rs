//! The governor: policy + law state + signal health + readers, evaluated at injected times,
//! publishing a [`Snapshot`] (the throttle document and everything `/metrics` shows) over a
//! `tokio::sync::watch` channel.

use std::sync::Arc;

use tokio::sync::watch;

use crate::clock::Millis;
use crate::document::ThrottleDocument;
use crate::law::{tick, LawState};
use crate::policy::{Policy, PolicyError};
use crate::signal::{SignalBook, SignalHealth, SignalId};
use crate::sources::{SourceFactory, SourceSet};

/// Running totals for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Evaluations run.
    pub evaluations: u64,
    /// Decisions per reason (indexed by [`Reason::index`]), one per governed hunt and
    /// evaluation.
    pub decisions: [u64; 6],
    /// Ratio changes per reason.
    pub ratio_changes: [u64; 6],
    /// Policy loads that succeeded (the start-up load included).
    pub reloads_ok: u64,
    /// Policy loads that were rejected.
    pub reloads_failed: u64,
}

/// One signal as `/metrics` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalReport {
    /// The signal.
    pub id: SignalId,
    /// Its read history.
    pub health: SignalHealth,
    /// Whether the law saw it as stale at the last evaluation.
    pub stale: bool,
    /// Seconds since its last good read, at the last evaluation.
    pub age_s: Option<f64>,
}

/// Everything the HTTP side serves, as of the last evaluation or reload.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The throttle document.
    pub document: ThrottleDocument,
    /// Whether a policy is loaded and an evaluation has run.
    pub ready: bool,
    /// Bound signals.
    pub signals: Vec<SignalReport>,
    /// Totals.
    pub counters: Counters,
    /// Hunts in the policy in force.
    pub policy_hunts: usize,
    /// Whether the latest policy load succeeded.
    pub last_reload_ok: bool,
    /// Why the latest policy load failed, if it did.
    pub last_reload_error: Option<String>,
}

/// The governor's state machine; the binary drives it from its loops, tests drive it by hand.
pub struct Governor {
    policy: Arc<Policy>,
    law: LawState,
    book: SignalBook,
    sources: SourceSet,
    factory: Arc<dyn SourceFactory>,
    document: ThrottleDocument,
    counters: Counters,
    reloaded: bool,
    ready: bool,
    last_reload_ok: bool,
    last_reload_error: Option<String>,
    last_eval_ms: Millis,
    tx: watch::Sender<Arc<Snapshot>>,
}

impl Governor {
    /// A governor for a loaded policy. `version_seed` is the first document version (the
    /// binary uses the wall clock in ms, so versions increase across restarts).
    pub fn new(
        policy: Policy,
        factory: Arc<dyn SourceFactory>,
        version_seed: u64,
        now: Millis,
    ) -> Self {
        let mut sources = SourceSet::default();
        sources.sync(&policy, factory.as_ref());
        let document = ThrottleDocument::initial(version_seed, now, policy.ttl_s);
        let counters = Counters {
            reloads_ok: 1,
            ..Counters::default()
        };
        let mut governor = Self {
            policy: Arc::new(policy),
            law: LawState::default(),
            book: SignalBook::default(),
            sources,
            factory,
            document,
            counters,
            reloaded: false,
            ready: false,
            last_reload_ok: true,
            last_reload_error: None,
            last_eval_ms: now,
            tx: watch::channel(Arc::new(Self::empty_snapshot(version_seed, now))).0,
        };
        governor.publish();
        governor
    }

    fn empty_snapshot(version: u64, now: Millis) -> Snapshot {
        Snapshot {
            document: ThrottleDocument::initial(version, now, 0),
            ready: false,
            signals: Vec::new(),
            counters: Counters::default(),
            policy_hunts: 0,
            last_reload_ok: false,
            last_reload_error: None,
        }
    }

    /// A receiver of every published snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The current document.
    pub fn document(&self) -> &ThrottleDocument {
        &self.document
    }

    /// The law's state.
    pub fn law_state(&self) -> &LawState {
        &self.law
    }

    /// Signal read history.
    pub fn signals(&self) -> &SignalBook {
        &self.book
    }

    /// Records a policy load: a new policy replaces the old one (the document version moves
    /// at the next evaluation); a rejected one is logged and counted, the old one stays.
    pub fn apply_reload(&mut self, result: Result<Policy, PolicyError>) {
        match result {
            Ok(policy) => {
                self.sources.sync(&policy, self.factory.as_ref());
                self.book.retain(&policy.bound_signals());
                tracing::info!(hunts = policy.hunts.len(), "policy loaded");
                self.policy = Arc::new(policy);
                self.reloaded = true;
                self.counters.reloads_ok = self.counters.reloads_ok.saturating_add(1);
                self.last_reload_ok = true;
                self.last_reload_error = None;
            }
            Err(e) => {
                tracing::error!(error = %e, "policy rejected; the last good policy stays in force");
                self.counters.reloads_failed = self.counters.reloads_failed.saturating_add(1);
                self.last_reload_ok = false;
                self.last_reload_error = Some(e.to_string());
            }
        }
        self.publish();
    }

    /// Reads every bound signal (real I/O, each under `read_timeout_ms`).
    pub async fn read_signals(&self) -> Vec<(SignalId, Result<f64, String>)> {
        self.sources.read_all(self.policy.read_timeout_ms).await
    }

    /// Reads the signals, then runs the law at `now` and publishes.
    pub async fn evaluate(&mut self, now: Millis) -> &ThrottleDocument {
        let readings = self.read_signals().await;
        self.evaluate_with(readings, now)
    }

    /// Records `readings` as of `now`, runs the law and publishes the result.
    pub fn evaluate_with(
        &mut self,
        readings: Vec<(SignalId, Result<f64, String>)>,
        now: Millis,
    ) -> &ThrottleDocument {
        for (id, read) in readings {
            // Log transitions only: a source that stays down does not flood the log (its
            // errors are counted in huntgate_signal_read_errors_total).
            let was_up = self.book.get(&id).map(|h| h.up);
            match &read {
                Err(e) if was_up != Some(false) => {
                    tracing::warn!(signal = %id, error = %e, "signal read failed; the signal is down");
                }
                Ok(_) if was_up == Some(false) => {
                    tracing::info!(signal = %id, "signal read succeeded again");
                }
                _ => {}
            }
            self.book.record(&id, read, now);
        }
        let statuses = self.book.statuses(now, self.policy.stale_after_ms);
        let (law, decisions) = tick(&self.law, &self.policy, &statuses, now);
        self.law = law;
        let all = std::iter::once(&decisions.default).chain(decisions.hunts.values());
        for d in all {
            let i = d.reason.index();
            if let Some(c) = self.counters.decisions.get_mut(i) {
                *c = c.saturating_add(1);
            }
            if d.changed {
                if let Some(c) = self.counters.ratio_changes.get_mut(i) {
                    *c = c.saturating_add(1);
                }
            }
        }
        for (hunt, d) in &decisions.hunts {
            if d.changed {
                tracing::info!(hunt = %hunt, ratio = d.ratio, limit = d.limit, reason = d.reason.as_str(), "ratio changed");
            }
        }
        self.document = self
            .document
            .next(&decisions, self.policy.ttl_s, now, self.reloaded);
        self.reloaded = false;
        self.counters.evaluations = self.counters.evaluations.saturating_add(1);
        self.ready = true;
        self.last_eval_ms = now;
        self.publish();
        &self.document
    }

    fn publish(&mut self) {
        let now = self.last_eval_ms;
        let stale_after = self.policy.stale_after_ms;
        let signals = self
            .policy
            .bound_signals()
            .into_iter()
            .map(|id| {
                let health = self.book.get(&id).cloned().unwrap_or_default();
                SignalReport {
                    stale: health.is_stale(now, stale_after),
                    age_s: health
                        .last_ok_ms
                        .map(|t| now.saturating_sub(t) as f64 / 1000.0),
                    id,
                    health,
                }
            })
            .collect();
        let snapshot = Snapshot {
            document: self.document.clone(),
            ready: self.ready,
            signals,
            counters: self.counters.clone(),
            policy_hunts: self.policy.hunts.len(),
            last_reload_ok: self.last_reload_ok,
            last_reload_error: self.last_reload_error.clone(),
        };
        self.tx.send_replace(Arc::new(snapshot));
    }
}
