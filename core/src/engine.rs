//! One worker's request handling and tick, over any [`SharedData`].
//!
//! The proxy-wasm adapter feeds headers, the clock and a session-id minter in,
//! and applies the returned [`Effects`]; nothing here calls the host directly.

use crate::config::{Config, Mode, UntrackedPolicy};
use crate::lease::{DemandTracker, HuntReport};
use crate::reply::{self, Reply};
use crate::request::{
    classify, sends_decision, Classified, HeaderPair, HuntRequest, Hunter, COOKIE_PREFIX,
};
use crate::shared_data::{SharedData, StoreError};
use crate::store::{self, AdmitOutcome, RegistryCache, SlotLookup, SlotRef};
use crate::throttle::ThrottleCache;
use crate::ticket::{needs_renewal, session_expiry_s, TicketError};
use crate::ticket_cache::TicketCache;

/// How long the sweeper lease lasts; another worker takes over after this if the holder stops.
pub const SWEEPER_LEASE_MS: u64 = 3_000;

/// Value of `x-huntgate-decision` sent upstream.
pub mod decision {
    /// A new join was admitted (or a live session re-joined without its ticket).
    pub const ADMITTED: &str = "admitted";
    /// A valid ticket was presented.
    pub const SESSION: &str = "session";
    /// Shadow mode: enforce mode would have rejected this request.
    pub const WOULD_REJECT: &str = "would-reject";
    /// The hunt is past `max_tracked_hunts` and `untracked_hunts` is `pass`.
    pub const UNTRACKED: &str = "untracked";
}

/// What happened to a request, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Not a hunt request.
    NotHunt,
    /// Valid ticket, forwarded.
    Session,
    /// Valid ticket past half-life: session extended and a new ticket issued.
    Renewed,
    /// New join admitted (or live session re-joined).
    Admitted,
    /// Join rejected (enforce).
    Rejected,
    /// Join would have been rejected (shadow).
    ShadowRejected,
    /// 400/401/404 before admission.
    BadRequest,
    /// Hunt past `max_tracked_hunts`.
    Untracked,
    /// The session store failed; see [`Effects::error`].
    StoreFailed,
}

/// A ticket to hand back to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedTicket {
    /// Value of the `x-huntgate-ticket` response header.
    pub ticket: String,
    /// Value of the `set-cookie` response header.
    pub cookie: String,
}

/// What the adapter must do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effects {
    /// Primary outcome.
    pub event: Event,
    /// Set `x-huntgate-decision` to this on the upstream request.
    pub decision: Option<&'static str>,
    /// Remove the client's own `x-huntgate-decision` (a forwarded request with no decision).
    pub strip_decision: bool,
    /// Answer locally with this instead of forwarding.
    pub reply: Option<Reply>,
    /// Add this ticket to the response.
    pub issue: Option<IssuedTicket>,
    /// The presented ticket was refused (it counted as no ticket).
    pub ticket_refused: Option<TicketError>,
    /// A store failure to log.
    pub error: Option<StoreError>,
}

impl Effects {
    fn new(event: Event) -> Self {
        Self {
            event,
            decision: None,
            strip_decision: false,
            reply: None,
            issue: None,
            ticket_refused: None,
            error: None,
        }
    }
}

/// Per-hunt gauge values published by the sweeper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HuntGauge {
    /// Canonical hunt id.
    pub hunt: String,
    /// Hunters holding a slot.
    pub active: u32,
    /// Enforced limit.
    pub limit: u32,
}

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Whether this worker held the sweeper lease.
    pub sweeper: bool,
    /// Sessions expired by this tick.
    pub expired: u32,
    /// Hunts tracked in this process.
    pub tracked_hunts: u32,
    /// Gauges for the first `max_hunt_metrics` hunts (only when `sweeper`).
    pub gauges: Vec<HuntGauge>,
}

/// One worker's state: its registry, throttle and verified-ticket caches and its lease identity.
#[derive(Debug)]
pub struct Worker {
    registry: RegistryCache,
    throttle: ThrottleCache,
    tickets: TicketCache,
    owner: u64,
    /// Joins rejected since the last tick, per slot (flushed into shared data).
    rejected: hashbrown::HashMap<SlotRef, u32>,
    /// What this worker last reported to the governor (when it is the fetcher).
    demand: DemandTracker,
    /// Seats that hold no session but could not be given back yet
    /// ([`StoreError::Unreleased`]): retried on every tick, at most
    /// [`MAX_UNRELEASED`] entries (merged per slot).
    unreleased: hashbrown::HashMap<SlotRef, u32>,
}

/// Slots with seats waiting to be given back, per worker (the bound of [`Worker`]'s
/// retry list; a slot already listed only adds to its entry).
pub const MAX_UNRELEASED: usize = 4096;

/// The verdict on a join, from the mode and the store's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forward and issue a ticket.
    Admit,
    /// Reply with the rejection.
    Reject,
    /// Forward, marked `would-reject`, no ticket.
    WouldReject,
}

fn feed(config: &Config) -> Option<&crate::config::GovernorFeed> {
    config.governor.as_ref()
}

/// Pure admission verdict.
pub fn verdict(mode: Mode, outcome: AdmitOutcome) -> Verdict {
    match (outcome, mode) {
        (AdmitOutcome::Admitted { .. } | AdmitOutcome::AlreadyActive, _) => Verdict::Admit,
        (AdmitOutcome::Full { .. }, Mode::Enforce) => Verdict::Reject,
        (AdmitOutcome::Full { .. }, Mode::Shadow) => Verdict::WouldReject,
    }
}

impl Worker {
    /// A worker whose lease identity is `owner` (unique per worker VM).
    pub fn new(owner: u64) -> Self {
        Self {
            registry: RegistryCache::default(),
            throttle: ThrottleCache::default(),
            tickets: TicketCache::default(),
            owner: owner.max(1),
            rejected: hashbrown::HashMap::new(),
            demand: DemandTracker::default(),
            unreleased: hashbrown::HashMap::new(),
        }
    }

    /// Creates the shared-data layout and registers the listed hunts. Run in `on_configure`.
    pub fn configure<S: SharedData>(
        &mut self,
        config: &Config,
        shared: &S,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        store::prepare_layout(shared, config.max_tracked_hunts)?;
        let mut listed: Vec<&String> = config.hunts.keys().collect();
        listed.sort();
        let protection = |hunt: &str| config.hunts.contains_key(hunt);
        for hunt in listed {
            self.registry.resolve(
                shared,
                hunt,
                config.max_tracked_hunts,
                &protection,
                now_ms,
                self.owner,
            )?;
        }
        Ok(())
    }

    /// Handles one request's headers at `now_ms`. `mint` makes a fresh anonymous session id.
    pub fn handle<S: SharedData, H: HeaderPair>(
        &mut self,
        config: &Config,
        shared: &S,
        headers: &[H],
        now_ms: u64,
        mint: &mut dyn FnMut() -> String,
    ) -> Effects {
        let mut effects = self.decide(config, shared, headers, now_ms, mint);
        if effects.decision.is_some_and(|d| !config.marks.marks(d)) {
            effects.decision = None;
        }
        effects.strip_decision =
            effects.decision.is_none() && effects.reply.is_none() && sends_decision(headers);
        effects
    }

    fn decide<S: SharedData, H: HeaderPair>(
        &mut self,
        config: &Config,
        shared: &S,
        headers: &[H],
        now_ms: u64,
        mint: &mut dyn FnMut() -> String,
    ) -> Effects {
        let request = match classify(config, headers) {
            Classified::NotHunt => return Effects::new(Event::NotHunt),
            Classified::Refuse(refusal) => {
                let mut effects = Effects::new(Event::BadRequest);
                effects.reply = Some(reply::refusal(&refusal));
                return effects;
            }
            Classified::Hunt(request) => request,
        };
        let ttl_s = config.session_ttl_s;
        // Every presented ticket is checked, in order; the first valid one counts.
        let mut ticket_refused = None;
        let mut renewal = None;
        for ticket in request.tickets.iter() {
            match self
                .tickets
                .verify(&config.ticket_keys, ticket, &request.hunt, now_ms, ttl_s)
            {
                Ok(claims) => match request.hunter {
                    Hunter::Identified(id) if id != claims.hunter => {
                        ticket_refused.get_or_insert(TicketError::OtherHunter);
                    }
                    _ if !needs_renewal(claims.expires_s, now_ms, ttl_s) => {
                        let mut effects = Effects::new(Event::Session);
                        effects.decision = Some(decision::SESSION);
                        return effects;
                    }
                    _ => {
                        renewal = Some(claims.hunter.clone());
                        ticket_refused = None;
                        break;
                    }
                },
                Err(e) => {
                    ticket_refused.get_or_insert(e);
                }
            }
        }
        let mut effects = self.admit(config, shared, &request, renewal, now_ms, mint);
        effects.ticket_refused = ticket_refused;
        effects
    }

    fn admit<S: SharedData>(
        &mut self,
        config: &Config,
        shared: &S,
        request: &HuntRequest<'_>,
        renewal: Option<String>,
        now_ms: u64,
        mint: &mut dyn FnMut() -> String,
    ) -> Effects {
        let hunt = request.hunt.as_str();
        let renewing = renewal.is_some();
        let retry = config.retry_after_s;
        let failed = |error: StoreError| {
            let mut effects = Effects::new(Event::StoreFailed);
            if renewing {
                effects.decision = Some(decision::SESSION);
            } else {
                effects.reply = Some(reply::admission_unavailable(hunt, retry));
            }
            effects.error = Some(error);
            effects
        };
        if let Err(e) = self.throttle.refresh(shared) {
            return failed(e);
        }
        let hunter = match (renewal, request.hunter) {
            (Some(hunter), _) => hunter,
            (None, Hunter::Identified(id)) => id.to_string(),
            (None, Hunter::Anonymous) => mint(),
        };
        let expires_s = session_expiry_s(now_ms, config.session_ttl_s);
        let key = store::hunter_key(hunt, &hunter);
        let limit = if renewing {
            None
        } else {
            self.throttle
                .limit(hunt, &request.settings, now_ms, feed(config))
        };
        let mut attempt = 0;
        let mut admitted_into = None;
        let outcome = loop {
            let slot = match self.slot(config, shared, hunt, now_ms) {
                Ok(SlotLookup::Slot(slot)) => slot,
                Ok(SlotLookup::Untracked) if renewing => {
                    // A ticket holder is never frozen: the session is renewed uncounted.
                    break AdmitOutcome::AlreadyActive;
                }
                Ok(SlotLookup::Untracked) => {
                    let mut effects = Effects::new(Event::Untracked);
                    match config.untracked {
                        UntrackedPolicy::Pass => effects.decision = Some(decision::UNTRACKED),
                        UntrackedPolicy::Reject => {
                            effects.reply = Some(reply::hunt_capacity(hunt, retry))
                        }
                    }
                    return effects;
                }
                Err(e) => return failed(e),
            };
            admitted_into = Some(slot);
            match store::admit(shared, slot, key, expires_s, now_ms, limit) {
                Ok(outcome) => break outcome,
                // The slot went to another hunt: look this hunt up again, once.
                Err(StoreError::SlotMoved(_)) if attempt == 0 => {
                    self.registry.forget(hunt);
                    attempt += 1;
                }
                Err(e) => {
                    self.keep_unreleased(&e);
                    return failed(e);
                }
            }
        };
        match verdict(request.settings.mode, outcome) {
            Verdict::Admit => {
                let event = if renewing {
                    Event::Renewed
                } else {
                    Event::Admitted
                };
                let mut effects = Effects::new(event);
                effects.decision = Some(if renewing {
                    decision::SESSION
                } else {
                    decision::ADMITTED
                });
                let ticket = config.ticket_keys.issue(hunt, &hunter, expires_s);
                effects.issue = Some(IssuedTicket {
                    cookie: format!(
                        "{COOKIE_PREFIX}{hunt}={ticket}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax",
                        config.session_ttl_s
                    ),
                    ticket,
                });
                effects
            }
            Verdict::WouldReject => {
                let mut effects = Effects::new(Event::ShadowRejected);
                effects.decision = Some(decision::WOULD_REJECT);
                effects
            }
            Verdict::Reject => {
                if let Some(slot) = admitted_into {
                    *self.rejected.entry(slot).or_insert(0) += 1;
                }
                let active = match outcome {
                    AdmitOutcome::Full { active } => active,
                    _ => 0,
                };
                let mut effects = Effects::new(Event::Rejected);
                effects.reply = Some(reply::hunt_full(
                    hunt,
                    limit.unwrap_or(0),
                    active,
                    config.reject_status,
                    config.retry_after_s,
                ));
                effects
            }
        }
    }

    /// The hunt's slot, registering it (listed hunts: in the configuration or the
    /// governor's document, which may take over other hunts' slots) if needed.
    fn slot<S: SharedData>(
        &mut self,
        config: &Config,
        shared: &S,
        hunt: &str,
        now_ms: u64,
    ) -> Result<SlotLookup, StoreError> {
        let table = self.throttle.table();
        let listed = |h: &str| config.hunts.contains_key(h) || table.hunts.contains_key(h);
        self.registry.resolve(
            shared,
            hunt,
            config.max_tracked_hunts,
            &listed,
            now_ms,
            self.owner,
        )
    }

    /// Runs once per tick on every worker: the lease holder sweeps expired sessions
    /// and reports gauges; the others only refresh their registry view.
    pub fn tick<S: SharedData>(
        &mut self,
        config: &Config,
        shared: &S,
        now_ms: u64,
    ) -> Result<TickReport, StoreError> {
        self.registry.refresh(shared)?;
        self.unreleased
            .retain(|slot, seats| store::give_back(shared, *slot, *seats).is_err());
        for (slot, n) in self.rejected.drain() {
            store::add_rejected(shared, slot, n)?;
        }
        let mut report = TickReport {
            tracked_hunts: self.registry.len(),
            ..TickReport::default()
        };
        if !store::acquire_lease(shared, "sweeper", self.owner, now_ms, SWEEPER_LEASE_MS)? {
            return Ok(report);
        }
        report.sweeper = true;
        let hunts: Vec<(String, SlotRef)> = self
            .registry
            .hunts()
            .map(|(hunt, slot)| (hunt.to_string(), slot))
            .collect();
        self.throttle.refresh(shared)?;
        for (hunt, slot) in hunts {
            let (expired, active) =
                store::sweep_slot(shared, slot, now_ms).inspect_err(|e| self.keep_unreleased(e))?;
            report.expired += expired;
            if slot.slot < config.max_hunt_metrics {
                let settings = config.hunt_settings(&hunt).unwrap_or(config.default_hunt);
                let limit = self
                    .throttle
                    .limit(&hunt, &settings, now_ms, feed(config))
                    .unwrap_or(u32::MAX);
                report.gauges.push(HuntGauge {
                    limit,
                    hunt,
                    active,
                });
            }
        }
        Ok(report)
    }

    /// Remembers the seats of a [`StoreError::Unreleased`] for the next tick.
    fn keep_unreleased(&mut self, error: &StoreError) {
        if let StoreError::Unreleased {
            slot, tag, seats, ..
        } = error
        {
            let slot = SlotRef {
                slot: *slot,
                tag: *tag,
            };
            let known = self.unreleased.contains_key(&slot);
            if *seats > 0 && (known || self.unreleased.len() < MAX_UNRELEASED) {
                let entry = self.unreleased.entry(slot).or_insert(0);
                *entry = entry.saturating_add(*seats);
            }
        }
    }

    /// This process's lease report: every registered hunt with sessions, rejected
    /// joins since the previous report, or a live share (the fetcher's worker only).
    pub fn lease_report<S: SharedData>(
        &mut self,
        shared: &S,
        now_ms: u64,
    ) -> Result<Vec<HuntReport>, StoreError> {
        self.registry.refresh(shared)?;
        self.throttle.refresh(shared)?;
        let mut lines = Vec::new();
        for (hunt, slot) in self.registry.hunts() {
            let (active, rejected_total) = store::slot_stats(shared, slot)?;
            let rejected = self.demand.since_last(hunt, rejected_total);
            let share = self.throttle.share(hunt, now_ms);
            if active > 0 || rejected > 0 || share.is_some() {
                lines.push(HuntReport {
                    hunt: hunt.to_string(),
                    active,
                    rejected,
                    share,
                });
            }
        }
        Ok(lines)
    }

    /// Milliseconds since the lease in force was sent for, if there is one.
    pub fn lease_age_ms(&self, now_ms: u64) -> Option<u64> {
        self.throttle.lease_age_ms(now_ms)
    }

    /// Milliseconds since the governor document in force was last fetched (as of the last refresh).
    pub fn document_age_ms(&self, now_ms: u64) -> Option<u64> {
        self.throttle.age_ms(now_ms)
    }

    /// The error of the last throttle document that failed to parse, if any.
    pub fn throttle_error(&self) -> Option<&str> {
        self.throttle.last_error.as_deref()
    }
}
