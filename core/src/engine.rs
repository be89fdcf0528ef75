//! One worker's request handling and tick, over any [`SharedData`].
//!
//! The proxy-wasm adapter feeds headers, the clock and a session-id minter in,
//! and applies the returned [`Effects`]; nothing here calls the host directly.

use crate::config::{Config, Mode, UntrackedPolicy, WaitingRoom};
use crate::ended::EndedView;
use crate::lease::{DemandTracker, EndsReport, EndsTracker, FleetEnds, HuntReport};
use crate::reply::{self, Reply};
use crate::request::{
    accepts_html, classify, find_queue_tickets, sends_decision, Classified, HeaderPair,
    HuntRequest, Hunter, COOKIE_PREFIX, QUEUE_COOKIE_PREFIX,
};
use crate::shared_data::{SharedData, StoreError};
use crate::store::{self, AdmitOutcome, RegistryCache, SessionEnded, SlotLookup, SlotRef};
use crate::sweep_schedule::SweepSchedule;
use crate::throttle::ThrottleCache;
use crate::ticket::{needs_renewal, session_expiry_s, QueueClaims, TicketError};
use crate::ticket_cache::TicketCache;
use crate::waiting_room::{Dropped, Place};

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
    /// A leave request ended its session (answered by the filter).
    Left,
    /// A join of a full hunt waits in its queue (answered with its position).
    Queued,
}

/// What a request did to its hunt's waiting room, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// A hunter got a place and was told to wait for the first time.
    pub queued: u32,
    /// A hunter who had waited was admitted from the queue.
    pub dequeued: u32,
    /// Places dropped meanwhile (holders not back in time, places past their TTL).
    pub dropped: Dropped,
}

/// The session a forwarded hunt request belongs to: what the upstream's
/// `session_end.header` ends ([`Worker::end_session`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRef {
    /// Canonical hunt id.
    pub hunt: String,
    /// The hunter's store key in the hunt ([`store::hunter_key`]).
    pub key: u64,
}

/// A ticket to hand back to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedTicket {
    /// Value of the `x-huntgate-ticket` response header.
    pub ticket: String,
    /// Value of the `set-cookie` response header.
    pub cookie: String,
    /// A second `set-cookie` clearing the queue ticket cookie (a hunter admitted
    /// from the queue).
    pub queue_cookie: Option<String>,
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
    /// The session of a forwarded request with a hunter (a ticket holder's, or the
    /// one just admitted), for the upstream's end header.
    pub session: Option<SessionRef>,
    /// What the request did to the hunt's waiting room.
    pub queue: QueueCounts,
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
            session: None,
            queue: QueueCounts::default(),
        }
    }
}

/// Where a join of a hunt with a waiting room ended up.
enum Joined {
    /// It went through the store (admitted, or the hunt was full).
    Store(AdmitOutcome),
    /// It waits at `position`.
    Wait {
        position: u32,
        place: Place,
        eta_s: Option<u32>,
    },
    /// The queue holds `max_queue` places: today's hunt_full.
    QueueFull,
}

/// A hunt's waiting-room gauges (sweeper only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueGauge {
    /// Hunters waiting.
    pub length: u32,
    /// How long the longest-waiting of them has waited (ms).
    pub oldest_wait_ms: u64,
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
    /// The waiting room's gauges, for a hunt with one.
    pub queue: Option<QueueGauge>,
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
    /// Waiting-room places the sweeper dropped.
    pub queue_dropped: Dropped,
    /// Slots whose count the sweeper read: those due (see
    /// [`crate::sweep_schedule`]), the gauged ones and those with a waiting room.
    pub slots_read: u32,
}

/// One worker's state: its registry, throttle and verified-ticket caches and its lease identity.
#[derive(Debug)]
pub struct Worker {
    registry: RegistryCache,
    throttle: ThrottleCache,
    tickets: TicketCache,
    /// The sessions this process ended, as this worker last read them.
    ended: EndedView,
    owner: u64,
    /// Joins rejected since the last tick, per slot (flushed into shared data).
    rejected: hashbrown::HashMap<SlotRef, u32>,
    /// What this worker last reported to the governor (when it is the fetcher).
    demand: DemandTracker,
    /// The ends this worker shares through the lease exchange (when it is the fetcher).
    ends: EndsTracker,
    /// Seats that hold no session but could not be given back yet
    /// ([`StoreError::Unreleased`]): retried on every tick, at most
    /// [`MAX_UNRELEASED`] entries (merged per slot).
    unreleased: hashbrown::HashMap<SlotRef, u32>,
    /// When each tracked slot's count needs reading (while this worker sweeps).
    schedule: SweepSchedule,
    /// Whether this worker held the sweeper lease at its previous tick.
    sweeping: bool,
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

/// How long an end is remembered: every ticket it revokes has expired by then
/// (expiry ≤ issue + TTL + 1 s).
fn ended_keep_ms(config: &Config) -> u64 {
    (u64::from(config.session_ttl_s) + 2) * 1000
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
            ended: EndedView::default(),
            owner: owner.max(1),
            rejected: hashbrown::HashMap::new(),
            demand: DemandTracker::default(),
            ends: EndsTracker::default(),
            unreleased: hashbrown::HashMap::new(),
            schedule: SweepSchedule::default(),
            sweeping: false,
        }
    }

    /// Creates the shared-data layout and registers the listed hunts. Run in
    /// `on_configure`. Returns a warning to log when the process keeps shards per
    /// slot that an earlier configuration chose (they are fixed until it restarts).
    #[inline(never)]
    pub fn configure<S: SharedData>(
        &mut self,
        config: &Config,
        shared: &S,
        now_ms: u64,
    ) -> Result<Option<String>, StoreError> {
        let shards = store::prepare_layout(shared, config.max_tracked_hunts, now_ms)?;
        let chosen = store::shards_for(config.max_tracked_hunts);
        let warning = (shards != chosen).then(|| {
            format!(
                "max_tracked_hunts {} lays out {chosen} shards per slot, but this Envoy process keeps the {shards} its first configuration chose until it restarts (shard keys: up to max_tracked_hunts x {shards})",
                config.max_tracked_hunts
            )
        });
        let mut listed: Vec<&String> = config.hunts.keys().collect();
        crate::sort::sort(&mut listed);
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
        Ok(warning)
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

    #[inline(never)]
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
        let mut leaving = None;
        // The ended-session generations, read once per request with a ticket; if
        // they cannot be read, tickets pass as before (never freeze a hunter).
        let mut ended_error = None;
        let mut ended_read = false;
        for ticket in request.tickets.iter() {
            let verified = self.tickets.verify_session(
                &config.ticket_keys,
                ticket,
                &request.hunt,
                now_ms,
                ttl_s,
            );
            let ticket = match verified {
                Ok(ticket) => ticket,
                Err(e) => {
                    ticket_refused.get_or_insert(e);
                    continue;
                }
            };
            if let Hunter::Identified(id) = request.hunter {
                if id != ticket.claims.hunter {
                    ticket_refused.get_or_insert(TicketError::OtherHunter);
                    continue;
                }
            }
            if !ended_read {
                ended_read = true;
                ended_error = self.ended.refresh(shared).err();
            }
            if ended_error.is_none() {
                match self.ended.is_ended(shared, ticket.key, ticket.issued_ms) {
                    Ok(true) => {
                        ticket_refused.get_or_insert(TicketError::Ended);
                        continue;
                    }
                    Ok(false) => {}
                    Err(e) => ended_error = Some(e),
                }
            }
            if request.leave {
                leaving = Some(ticket.key);
                break;
            }
            if !needs_renewal(ticket.claims.expires_s, now_ms, ttl_s) {
                let key = ticket.key;
                let mut effects = Effects::new(Event::Session);
                effects.decision = Some(decision::SESSION);
                effects.error = ended_error;
                effects.session = Some(SessionRef {
                    hunt: request.hunt,
                    key,
                });
                return effects;
            }
            renewal = Some((ticket.claims.hunter.clone(), ticket.key));
            ticket_refused = None;
            break;
        }
        if request.leave {
            let mut effects = self.leave(config, shared, &request.hunt, leaving, now_ms);
            effects.ticket_refused = ticket_refused;
            effects.error = effects.error.take().or(ended_error);
            return effects;
        }
        let mut effects = self.admit(config, shared, &request, headers, renewal, now_ms, mint);
        if ticket_refused.is_some() {
            effects.ticket_refused = ticket_refused;
        }
        if effects.error.is_none() {
            effects.error = ended_error;
        }
        effects
    }

    /// Answers a leave request: ends the session of its valid ticket (`key`), or
    /// 403 without one.
    #[inline(never)]
    fn leave<S: SharedData>(
        &mut self,
        config: &Config,
        shared: &S,
        hunt: &str,
        key: Option<u64>,
        now_ms: u64,
    ) -> Effects {
        let Some(key) = key else {
            let mut effects = Effects::new(Event::BadRequest);
            effects.reply = Some(reply::no_session(hunt));
            return effects;
        };
        let session = SessionRef {
            hunt: hunt.to_string(),
            key,
        };
        match self.end_session(config, shared, &session, now_ms) {
            Ok(_) => {
                let mut effects = Effects::new(Event::Left);
                effects.reply = Some(reply::session_ended(hunt, COOKIE_PREFIX));
                effects
            }
            Err(e) => {
                let mut effects = Effects::new(Event::StoreFailed);
                effects.reply = Some(reply::session_end_unavailable(hunt, config.retry_after_s));
                effects.error = Some(e);
                effects
            }
        }
    }

    /// Ends `session` at `now_ms` (the upstream's end header, or a leave request):
    /// from then on every ticket issued for it so far is refused on every worker
    /// of this process (it counts as no ticket: the request is a new join), and
    /// its seat is free at once.
    pub fn end_session<S: SharedData>(
        &mut self,
        config: &Config,
        shared: &S,
        session: &SessionRef,
        now_ms: u64,
    ) -> Result<SessionEnded, StoreError> {
        let mut slot = self.registry.lookup(&session.hunt);
        if slot.is_none() {
            self.registry.refresh(shared)?;
            slot = self.registry.lookup(&session.hunt);
        }
        store::end_session(shared, slot, session.key, now_ms, ended_keep_ms(config))
            .inspect_err(|e| self.keep_unreleased(e))
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn admit<S: SharedData, H: HeaderPair>(
        &mut self,
        config: &Config,
        shared: &S,
        request: &HuntRequest<'_>,
        headers: &[H],
        renewal: Option<(String, u64)>,
        now_ms: u64,
        mint: &mut dyn FnMut() -> String,
    ) -> Effects {
        let hunt = request.hunt.as_str();
        let renewing = renewal.is_some();
        let renewal_key = renewal.as_ref().map(|(_, key)| *key);
        let retry = config.retry_after_s;
        let failed = |error: StoreError| {
            let mut effects = Effects::new(Event::StoreFailed);
            if renewing {
                effects.decision = Some(decision::SESSION);
                effects.session = renewal_key.map(|key| SessionRef {
                    hunt: hunt.to_string(),
                    key,
                });
            } else {
                effects.reply = Some(reply::admission_unavailable(hunt, retry));
            }
            effects.error = Some(error);
            effects
        };
        if let Err(e) = self.throttle.refresh(shared) {
            return failed(e);
        }
        // The waiting room: new joins of an enforcing hunt that has one.
        let room = match request.settings.mode {
            Mode::Enforce if !renewing => config.waiting_room(hunt),
            _ => None,
        };
        let mut queue_refused = None;
        let mut presented_queue = false;
        let queue_claim = match room {
            Some(room) => {
                let tickets = find_queue_tickets(headers, hunt);
                presented_queue = !tickets.is_empty();
                first_queue_claim(config, room, &tickets, request.hunter, hunt, now_ms)
                    .unwrap_or_else(|e| {
                        queue_refused = e;
                        None
                    })
            }
            None => None,
        };
        let hunter = match (renewal, request.hunter) {
            (Some((hunter, _)), _) => hunter,
            (None, Hunter::Identified(id)) => id.to_string(),
            // An anonymous hunter's identity is the one its queue place was given to.
            (None, Hunter::Anonymous) => match &queue_claim {
                Some(claims) => claims.hunter.clone(),
                None => mint(),
            },
        };
        let expires_s = session_expiry_s(now_ms, config.session_ttl_s);
        let key = store::hunter_key(hunt, &hunter);
        // A ticket issued at or before an end is ended: a re-join in the same
        // millisecond as the end (or before it, by another proxy's clock) gets
        // the next one. The view is caught up first: the end may be this
        // worker's own, moments ago.
        let ended_ms = self
            .ended
            .refresh(shared)
            .and_then(|()| self.ended.ended_ms(shared, key))
            .unwrap_or_else(|_| self.ended.known_ended_ms(key));
        let issued_ms = match ended_ms {
            Some(ended_ms) if ended_ms >= now_ms => ended_ms.saturating_add(1),
            _ => now_ms,
        };
        let limit = if renewing {
            None
        } else {
            self.throttle
                .limit(hunt, &request.settings, now_ms, feed(config))
        };
        let mut attempt = 0;
        let mut admitted_into = None;
        let mut counts = QueueCounts::default();
        let mut queue_error = None;
        let joined = loop {
            let slot = match self.slot(config, shared, hunt, now_ms) {
                Ok(SlotLookup::Slot(slot)) => slot,
                Ok(SlotLookup::Untracked) if renewing => {
                    // A ticket holder is never frozen: the session is renewed uncounted.
                    break Joined::Store(AdmitOutcome::AlreadyActive);
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
            let joined = match room {
                Some(room) => queue_join(
                    shared,
                    room,
                    slot,
                    key,
                    (expires_s, now_ms),
                    limit,
                    &mut counts,
                    &mut queue_error,
                ),
                None => {
                    store::admit(shared, slot, key, expires_s, now_ms, limit).map(Joined::Store)
                }
            };
            match joined {
                Ok(joined) => break joined,
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
        let outcome = match joined {
            Joined::Store(outcome) => outcome,
            Joined::QueueFull => AdmitOutcome::Full {
                active: admitted_into
                    .and_then(|slot| store::active_count(shared, slot).ok())
                    .unwrap_or(0),
            },
            Joined::Wait {
                position,
                place,
                eta_s,
            } => {
                if let Some(slot) = admitted_into {
                    *self.rejected.entry(slot).or_insert(0) += 1;
                }
                let Some(room) = room else {
                    return failed(StoreError::Host("waiting room lost".to_string()));
                };
                let ticket =
                    config
                        .ticket_keys
                        .issue_queue(hunt, &hunter, place.seq, place.issued_ms);
                let ttl_left_ms = place
                    .issued_ms
                    .saturating_add(room.ttl_ms())
                    .saturating_sub(now_ms);
                let queued = reply::QueuedReply {
                    hunt,
                    position,
                    eta_s,
                    retry_after_s: room.retry_after_s,
                    ticket: &ticket,
                    ticket_ttl_s: ttl_left_ms.div_ceil(1000).max(1),
                };
                let html = accepts_html(headers).then_some(room.page.as_deref());
                let mut effects = Effects::new(Event::Queued);
                effects.reply = Some(reply::queued(&queued, config.reject_status, html));
                effects.queue = counts;
                effects.ticket_refused = queue_refused;
                effects.error = queue_error;
                return effects;
            }
        };
        let mut effects = self.verdict_effects(
            config,
            request,
            (&hunter, key, expires_s, issued_ms),
            renewing,
            outcome,
            limit,
            admitted_into,
        );
        if let Some(issued) = effects.issue.as_mut() {
            if presented_queue {
                issued.queue_cookie = Some(format!(
                    "{QUEUE_COOKIE_PREFIX}{hunt}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"
                ));
            }
        }
        effects.queue = counts;
        effects.ticket_refused = queue_refused;
        if effects.error.is_none() {
            effects.error = queue_error;
        }
        effects
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn verdict_effects(
        &mut self,
        config: &Config,
        request: &HuntRequest<'_>,
        (hunter, key, expires_s, issued_ms): (&str, u64, u32, u64),
        renewing: bool,
        outcome: AdmitOutcome,
        limit: Option<u32>,
        admitted_into: Option<SlotRef>,
    ) -> Effects {
        let hunt = request.hunt.as_str();
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
                let ticket = config
                    .ticket_keys
                    .issue_at(hunt, hunter, expires_s, issued_ms);
                effects.session = Some(SessionRef {
                    hunt: hunt.to_string(),
                    key,
                });
                effects.issue = Some(IssuedTicket {
                    cookie: format!(
                        "{COOKIE_PREFIX}{hunt}={ticket}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax",
                        config.session_ttl_s
                    ),
                    ticket,
                    queue_cookie: None,
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
    #[inline(never)]
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
            self.sweeping = false;
            return Ok(report);
        }
        report.sweeper = true;
        if !self.sweeping {
            // Another worker swept meanwhile: start from every slot due.
            self.schedule.reset();
            self.sweeping = true;
        }
        self.throttle.refresh(shared)?;
        self.schedule.sync(
            self.registry.generation(),
            config.session_ttl_s,
            self.registry.hunts().map(|(_, slot)| slot),
            now_ms,
        );
        let due = self.schedule.take_due(now_ms);
        // Read on every tick: the gauged slots, and every hunt when waiting rooms
        // exist (their queues are pruned by time); the others only when due.
        let every_tick: Vec<(String, SlotRef)> = if config.waiting_room_any {
            self.registry
                .hunts()
                .filter(|(hunt, slot)| {
                    slot.slot < config.max_hunt_metrics || config.waiting_room(hunt).is_some()
                })
                .map(|(hunt, slot)| (hunt.to_string(), slot))
                .collect()
        } else {
            (0..config.max_hunt_metrics.min(self.registry.len()))
                .filter_map(|slot| self.registry.slot(slot))
                .map(|(hunt, slot)| (hunt.to_string(), slot))
                .collect()
        };
        let scheduled_only = due.into_iter().filter_map(|slot| {
            let (hunt, current) = self.registry.slot(slot.slot)?;
            let read_anyway =
                current.slot < config.max_hunt_metrics || config.waiting_room(hunt).is_some();
            (current == slot && !read_anyway).then(|| (hunt.to_string(), slot))
        });
        let slots: Vec<(String, SlotRef)> = every_tick.into_iter().chain(scheduled_only).collect();
        for (hunt, slot) in slots {
            let swept =
                store::sweep(shared, slot, now_ms).inspect_err(|e| self.keep_unreleased(e))?;
            self.schedule.read(slot, now_ms, &swept);
            report.slots_read += 1;
            report.expired += swept.removed;
            let queue = match config.waiting_room(&hunt) {
                Some(room) => sweep_queue(shared, room, slot, now_ms, &mut report.queue_dropped)?,
                None => None,
            };
            if slot.slot < config.max_hunt_metrics {
                let settings = config.hunt_settings(&hunt).unwrap_or(config.default_hunt);
                let limit = self
                    .throttle
                    .limit(&hunt, &settings, now_ms, feed(config))
                    .unwrap_or(u32::MAX);
                report.gauges.push(HuntGauge {
                    limit,
                    hunt,
                    active: swept.active,
                    queue,
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
                shards: self.registry.shards(),
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
    #[inline(never)]
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

    /// The ends this process recorded that the governor has not acknowledged
    /// yet (oldest first, at most [`crate::lease::MAX_REPORTED_ENDS`]) and the
    /// cursor of the fleet ends received: the rest of the lease report. The
    /// lists are read only when their generations moved since the last report;
    /// when they cannot be read, the report carries what an earlier scan found
    /// (and the cursor), with the error.
    #[inline(never)]
    pub fn ends_report<S: SharedData>(
        &mut self,
        config: &Config,
        shared: &S,
        now_ms: u64,
    ) -> (EndsReport, Option<StoreError>) {
        let scan = store::ended_generations(shared).and_then(|generations| {
            if !self.ends.needs_scan(&generations) {
                return Ok(());
            }
            let local = store::local_ends(shared)?;
            self.ends
                .scanned(generations, local, now_ms, ended_keep_ms(config));
            Ok(())
        });
        (self.ends.report(), scan.err())
    }

    /// The governor answered the lease exchange: with the fleet's ends (`Some`),
    /// the ends reported are acknowledged and those of other proxies are recorded
    /// here, so that every worker refuses their tickets; `None` (an exchange that
    /// failed, or a governor that sends no ends) leaves them to be reported again.
    #[inline(never)]
    pub fn fleet_ends_received<S: SharedData>(
        &mut self,
        config: &Config,
        shared: &S,
        ends: Option<FleetEnds>,
        now_ms: u64,
    ) -> Result<store::FleetEndsRecorded, StoreError> {
        let Some(ends) = ends else {
            self.ends.unacknowledged();
            return Ok(store::FleetEndsRecorded::default());
        };
        self.ends.acknowledged();
        let recorded =
            store::record_fleet_ends(shared, &ends.sessions, now_ms, ended_keep_ms(config))?;
        // Only once they are recorded: otherwise the governor sends them again.
        self.ends.cursor = Some(ends.cursor);
        Ok(recorded)
    }

    /// Local ends not yet acknowledged by the governor (the fetcher's worker).
    pub fn ends_unshared(&self) -> usize {
        self.ends.pending()
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

/// The first valid queue ticket of `hunt` among `tickets` (for an identified
/// hunter, only one issued to it); `Err` carries why the first refused one was
/// refused, when none is valid.
fn first_queue_claim(
    config: &Config,
    room: &WaitingRoom,
    tickets: &crate::request::Tickets<'_>,
    hunter: Hunter<'_>,
    hunt: &str,
    now_ms: u64,
) -> Result<Option<QueueClaims>, Option<TicketError>> {
    let mut refused = None;
    for ticket in tickets.iter() {
        match config
            .ticket_keys
            .verify_queue(ticket, hunt, now_ms, room.queue_ttl_s)
        {
            Ok(claims) => match hunter {
                Hunter::Identified(id) if id != claims.hunter => {
                    refused.get_or_insert(TicketError::OtherHunter);
                }
                _ => return Ok(Some(claims)),
            },
            Err(e) => {
                refused.get_or_insert(e);
            }
        }
    }
    match refused {
        Some(e) => Err(Some(e)),
        None => Ok(None),
    }
}

/// A join through `slot`'s waiting room (see [`crate::waiting_room`]): take or
/// find the hunter's place, *then* read the count; a place within the free
/// seats tries the store (and leaves the queue once admitted), any other waits.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn queue_join<S: SharedData>(
    shared: &S,
    room: &WaitingRoom,
    slot: SlotRef,
    key: u64,
    (expires_s, now_ms): (u32, u64),
    limit: Option<u32>,
    counts: &mut QueueCounts,
    error: &mut Option<StoreError>,
) -> Result<Joined, StoreError> {
    let (standing, dropped, eta_s) = store::update_queue(shared, slot, |queue| {
        let before = queue.places.len();
        let dropped = queue.prune(room, now_ms);
        let standing = queue.take_place(room, key, now_ms);
        let eta_s = standing.and_then(|s| queue.eta_s(s.position, now_ms));
        let write = standing.is_some() || queue.places.len() != before;
        ((standing, dropped, eta_s), write)
    })?;
    counts.dropped.add(dropped);
    let Some(standing) = standing else {
        return Ok(Joined::QueueFull);
    };
    // Read after the place: every seat seen free here is one no later place takes.
    let active = store::active_count(shared, slot)?;
    let free = limit.map_or(u32::MAX, |limit| limit.saturating_sub(active));
    if standing.position <= free {
        let outcome = store::admit(shared, slot, key, expires_s, now_ms, limit)?;
        if !matches!(outcome, AdmitOutcome::Full { .. }) {
            let seq = standing.place.seq;
            match store::update_queue(shared, slot, |queue| (queue.remove(key, seq, now_ms), true))
            {
                Ok(true) => counts.dequeued += 1,
                Ok(false) => {}
                // Admitted all the same; the place drops out once its holder is silent.
                Err(e) => *error = Some(e),
            }
            return Ok(Joined::Store(outcome));
        }
    }
    if standing.place.waited {
        return Ok(Joined::Wait {
            position: standing.position,
            place: standing.place,
            eta_s,
        });
    }
    // First time told to wait: mark the place (it now counts as queued).
    let marked = store::update_queue(shared, slot, |queue| match queue.mark_waited(key, now_ms) {
        Some(position) => (Some((position, queue.eta_s(position, now_ms))), true),
        None => (None, false),
    })?;
    counts.queued += 1;
    let (position, eta_s) = marked.unwrap_or((standing.position, eta_s));
    Ok(Joined::Wait {
        position,
        place: Place {
            waited: true,
            ..standing.place
        },
        eta_s,
    })
}

/// Drops the silent and expired places of `slot`'s queue (the sweeper, every
/// tick) and returns its gauges; `None` when the slot moved to another hunt.
#[inline(never)]
fn sweep_queue<S: SharedData>(
    shared: &S,
    room: &WaitingRoom,
    slot: SlotRef,
    now_ms: u64,
    dropped: &mut Dropped,
) -> Result<Option<QueueGauge>, StoreError> {
    let swept = store::update_queue(shared, slot, |queue| {
        let before = queue.places.len();
        let gone = queue.prune(room, now_ms);
        let gauge = QueueGauge {
            length: queue.waiting(),
            oldest_wait_ms: queue.oldest_wait_ms(now_ms),
        };
        ((gone, gauge), queue.places.len() != before)
    });
    match swept {
        Ok((gone, gauge)) => {
            dropped.add(gone);
            Ok(Some(gauge))
        }
        Err(StoreError::SlotMoved(_)) => Ok(None),
        Err(e) => Err(e),
    }
}
