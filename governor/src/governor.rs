//! The governor: policy + law state + signal health + readers, evaluated at injected times,
//! publishing a [`Snapshot`] (the throttle document and everything `/metrics` shows) over a
//! `tokio::sync::watch` channel.

use std::sync::Arc;

use tokio::sync::watch;

use std::collections::{BTreeMap, VecDeque};

use crate::clock::{secs, Millis};
use crate::document::ThrottleDocument;
use crate::law::{tick, LawState, Reason};
use crate::operator::OperatorState;
use crate::persist::{self, SavedState};
use crate::policy::{Policy, PolicyError};
use crate::signal::{ErrorCause, ReadError, SignalBook, SignalHealth, SignalId};
use crate::sources::{SourceFactory, SourceSet};

/// Least time between two log lines about one signal's changing failure cause.
pub const CAUSE_LOG_INTERVAL_MS: Millis = secs(60);
/// Ratio changes kept per hunt for `explain` (the newest).
pub const STEPS_KEPT: usize = 16;

/// One ratio change of the law.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// When (ms since the epoch).
    pub at_ms: Millis,
    /// The ratio before.
    pub from: f64,
    /// The ratio after.
    pub to: f64,
    /// Why.
    pub reason: Reason,
}

/// The latest ratio changes per hunt, oldest first.
pub type History = BTreeMap<String, VecDeque<Step>>;

/// Hunts named in the one INFO line that summarizes an evaluation's ratio changes.
pub const CHANGED_HUNTS_LOGGED: usize = 5;

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
    /// State saves that succeeded.
    pub state_saves_ok: u64,
    /// State saves that failed.
    pub state_saves_failed: u64,
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
    /// Seconds since its last good read (since it was bound, if never read), at the last
    /// evaluation.
    pub age_s: f64,
}

/// What was last logged about one failing signal (the log is rate-limited per signal).
#[derive(Debug, Clone, Default, PartialEq)]
struct CauseLog {
    /// The failure last logged, if the signal is down.
    logged: Option<(ErrorCause, String)>,
    /// When it was logged.
    at_ms: Millis,
    /// Changes of cause not logged since (rate limit).
    suppressed: u64,
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
    /// Files of the policy directory ignored at the latest read.
    pub ignored_files: usize,
    /// The policy the law runs on: the files' with the operator state applied.
    pub policy: Arc<Policy>,
    /// The policy as the files give it.
    pub files: Arc<Policy>,
    /// Overrides, started and ended hunts set through the API.
    pub operator: Arc<OperatorState>,
    /// The latest ratio changes per hunt.
    pub history: Arc<History>,
}

/// The governor's state machine; the binary drives it from its loops, tests drive it by hand.
pub struct Governor {
    /// The policy the law runs on ([`crate::operator::effective`] of `files`).
    policy: Arc<Policy>,
    files: Arc<Policy>,
    operator: Arc<OperatorState>,
    history: Arc<History>,
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
    cause_log: BTreeMap<SignalId, CauseLog>,
    saved: Option<LawState>,
    ignored_files: usize,
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
        let mut book = SignalBook::default();
        book.bind(&policy.bound_signals(), now);
        let document = ThrottleDocument::initial(version_seed, now, policy.ttl_s);
        let counters = Counters {
            reloads_ok: 1,
            ..Counters::default()
        };
        let policy = Arc::new(policy);
        let mut governor = Self {
            files: Arc::clone(&policy),
            operator: Arc::new(OperatorState::default()),
            history: Arc::new(History::new()),
            policy,
            law: LawState::default(),
            book,
            sources,
            factory,
            document,
            counters,
            reloaded: false,
            ready: false,
            last_reload_ok: true,
            last_reload_error: None,
            last_eval_ms: now,
            cause_log: BTreeMap::new(),
            saved: None,
            ignored_files: 0,
            tx: watch::channel(Arc::new(Self::empty_snapshot(version_seed, now))).0,
        };
        governor.publish();
        governor
    }

    fn empty_snapshot(version: u64, now: Millis) -> Snapshot {
        Snapshot {
            policy: Arc::new(Policy::default()),
            files: Arc::new(Policy::default()),
            operator: Arc::new(OperatorState::default()),
            history: Arc::new(History::new()),
            document: ThrottleDocument::initial(version, now, 0),
            ready: false,
            signals: Vec::new(),
            counters: Counters::default(),
            policy_hunts: 0,
            last_reload_ok: false,
            last_reload_error: None,
            ignored_files: 0,
        }
    }

    /// A receiver of every published snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    /// The policy in force: the files' with the operator state applied.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The policy as the files give it.
    pub fn file_policy(&self) -> &Policy {
        &self.files
    }

    /// The operator state in force.
    pub fn operator(&self) -> &OperatorState {
        &self.operator
    }

    /// Puts `state` (set through the API, here or by another replica) in force at `now`:
    /// the document changes at the next evaluation (the caller runs one at once).
    pub fn set_operator(&mut self, state: OperatorState, now: Millis) {
        if *self.operator == state {
            return;
        }
        self.operator = Arc::new(state);
        self.merge(now);
        self.reloaded = true;
        self.publish();
    }

    /// Recomputes the policy in force from the files' and the operator state.
    fn merge(&mut self, now: Millis) {
        // Nothing set through the API (the usual case): the files' policy as it is, without
        // the copy and comparison of every hunt's spec at each evaluation.
        if self.operator.hunts.is_empty() {
            if !Arc::ptr_eq(&self.policy, &self.files) {
                self.policy = Arc::clone(&self.files);
            }
            return;
        }
        let merged = crate::operator::effective(&self.files, &self.operator, now);
        if *self.policy != merged {
            self.policy = Arc::new(merged);
        }
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

    /// Resumes the law's state from a saved state (see [`persist::restore`] for the age
    /// rule); returns how many hunts resumed. Call before the first evaluation.
    pub fn restore(&mut self, saved: &SavedState, now: Millis) -> usize {
        let (law, resumed) = persist::restore(saved, &self.policy, now);
        self.law = law;
        self.saved = Some(self.law.clone());
        resumed
    }

    /// The state to save, if it changed since the last call that returned one. The caller
    /// writes it and reports with [`Self::record_save`] (after a failure the next call
    /// returns the state again).
    pub fn unsaved(&mut self, now: Millis) -> Option<SavedState> {
        if self.saved.as_ref() == Some(&self.law) || !self.ready {
            return None;
        }
        self.saved = Some(self.law.clone());
        Some(persist::snapshot(&self.law, now))
    }

    /// Records the outcome of writing the state [`Self::unsaved`] returned; after a failure
    /// the next call returns it again.
    pub fn record_save(&mut self, ok: bool) {
        if ok {
            self.counters.state_saves_ok = self.counters.state_saves_ok.saturating_add(1);
        } else {
            self.counters.state_saves_failed = self.counters.state_saves_failed.saturating_add(1);
            self.saved = None;
        }
        self.publish();
    }

    /// Records how many files the latest read of the policy directory ignored.
    pub fn set_ignored_files(&mut self, n: usize) {
        if n != self.ignored_files {
            self.ignored_files = n;
            self.publish();
        }
    }

    /// Records a policy load at `now`: a new policy replaces the old one (the document
    /// version moves at the next evaluation); a rejected one is logged and counted, the old
    /// one stays.
    pub fn apply_reload(&mut self, result: Result<Policy, PolicyError>, now: Millis) {
        match result {
            Ok(policy) => {
                self.sources.sync(&policy, self.factory.as_ref());
                let bound = policy.bound_signals();
                self.book.bind(&bound, now);
                self.cause_log.retain(|id, _| bound.contains(id));
                tracing::info!(hunts = policy.hunts.len(), "policy loaded");
                self.files = Arc::new(policy);
                self.merge(now);
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
    pub async fn read_signals(&self) -> Vec<(SignalId, Result<f64, ReadError>)> {
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
        readings: Vec<(SignalId, Result<f64, ReadError>)>,
        now: Millis,
    ) -> &ThrottleDocument {
        for (id, read) in readings {
            self.log_read(&id, &read, now);
            self.book.record(&id, read, now);
        }
        // An override whose lifetime ended stops applying at this evaluation.
        self.merge(now);
        let statuses = self.book.statuses(now, self.policy.stale_after_ms);
        let (law, decisions) = tick(&self.law, &self.policy, &statuses, now);
        self.record_steps(&law, &decisions, now);
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
        log_changes(&decisions);
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

    /// Keeps the ratio changes of `decisions` (at most [`STEPS_KEPT`] per hunt, hunts of
    /// the policy in force only).
    fn record_steps(&mut self, law: &LawState, decisions: &crate::law::Decisions, now: Millis) {
        let changed = decisions.hunts.values().any(|d| d.changed);
        let gone = self
            .history
            .keys()
            .any(|h| !self.policy.hunts.contains_key(h));
        if !changed && !gone {
            return;
        }
        let history = Arc::make_mut(&mut self.history);
        history.retain(|h, _| self.policy.hunts.contains_key(h));
        for (hunt, d) in decisions.hunts.iter().filter(|(_, d)| d.changed) {
            let from = self.law.hunts.get(hunt).map_or(1.0, |s| s.ratio);
            let to = law.hunts.get(hunt).map_or(d.ratio, |s| s.ratio);
            let steps = history.entry(hunt.clone()).or_default();
            steps.push_back(Step {
                at_ms: now,
                from,
                to,
                reason: d.reason,
            });
            while steps.len() > STEPS_KEPT {
                steps.pop_front();
            }
        }
    }

    /// Logs a signal going down, coming back, or failing for a new reason (at most once per
    /// [`CAUSE_LOG_INTERVAL_MS`] per signal; the changes in between are counted in the next
    /// line). Errors are counted in `huntgate_signal_read_errors_total` either way.
    fn log_read(&mut self, id: &SignalId, read: &Result<f64, ReadError>, now: Millis) {
        let entry = self.cause_log.entry(id.clone()).or_default();
        match read {
            Ok(_) => {
                if entry.logged.take().is_some() {
                    tracing::info!(signal = %id, "signal read succeeded again");
                }
                entry.suppressed = 0;
            }
            Err(e) => {
                let current = (e.cause, e.message.clone());
                match &entry.logged {
                    None => {
                        tracing::warn!(signal = %id, cause = e.cause.as_str(), error = %e, "signal read failed; the signal is down");
                    }
                    Some(logged) if *logged == current => return,
                    Some(_) if now.saturating_sub(entry.at_ms) < CAUSE_LOG_INTERVAL_MS => {
                        entry.suppressed = entry.suppressed.saturating_add(1);
                        return;
                    }
                    Some(_) => {
                        tracing::warn!(signal = %id, cause = e.cause.as_str(), error = %e, suppressed_changes = entry.suppressed, "signal still down; the cause changed");
                    }
                }
                entry.logged = Some(current);
                entry.at_ms = now;
                entry.suppressed = 0;
            }
        }
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
                    age_s: health.age_ms(now) as f64 / 1000.0,
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
            ignored_files: self.ignored_files,
            policy: Arc::clone(&self.policy),
            files: Arc::clone(&self.files),
            operator: Arc::clone(&self.operator),
            history: Arc::clone(&self.history),
        };
        self.tx.send_replace(Arc::new(snapshot));
    }
}

/// One INFO line per evaluation that changed ratios (not one per hunt: a cut of 1,000
/// hunts is one line), naming the first few; every change is logged at DEBUG.
fn log_changes(decisions: &crate::law::Decisions) {
    let changed: Vec<(&String, &crate::law::Decision)> =
        decisions.hunts.iter().filter(|(_, d)| d.changed).collect();
    for (hunt, d) in &changed {
        tracing::debug!(hunt = %hunt, ratio = d.ratio, limit = d.limit, reason = d.reason.as_str(), "ratio changed");
    }
    let default = decisions.default.changed.then_some(decisions.default.ratio);
    if changed.is_empty() && default.is_none() {
        return;
    }
    let mut by_reason = [0usize; 6];
    for (_, d) in &changed {
        if let Some(n) = by_reason.get_mut(d.reason.index()) {
            *n += 1;
        }
    }
    let reasons: Vec<String> = Reason::ALL
        .iter()
        .filter_map(|r| {
            let n = by_reason.get(r.index()).copied().unwrap_or(0);
            (n > 0).then(|| format!("{}={n}", r.as_str()))
        })
        .collect();
    let mut examples: Vec<String> = changed
        .iter()
        .take(CHANGED_HUNTS_LOGGED)
        .map(|(h, d)| format!("{h}={}", d.ratio))
        .collect();
    if changed.len() > CHANGED_HUNTS_LOGGED {
        examples.push(format!("… {} more", changed.len() - CHANGED_HUNTS_LOGGED));
    }
    tracing::info!(
        hunts = changed.len(),
        reasons = %reasons.join(","),
        default_ratio = ?default,
        changed = %examples.join(" "),
        "ratios changed"
    );
}
