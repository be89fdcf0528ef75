//! The fleet lease allocator (issue 10) on simulated time: worked examples (a 70/20/10
//! fleet against a limit of 100, demand moving, a silent proxy, a new proxy, a limit cut,
//! a governor restart) and property tests over arbitrary sequences of exchanges, lost
//! answers, crashes, restarts, limit changes and time.

// Test helpers outside #[test] functions unwrap and panic too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use huntgate_governor::clock::Millis;
use huntgate_governor::fleet::fair::{targets, water_fill, Want};
use huntgate_governor::fleet::{
    AllocatorConfig, Fleet, Grant, HuntAllocation, Report, EXACT_UP_TO,
};
use proptest::prelude::*;

/// One simulated Envoy process serving one hunt.
#[derive(Debug, Clone, Default)]
struct Proxy {
    id: String,
    /// Sessions it counts.
    active: u32,
    /// Hunters waiting to join (they retry until admitted).
    waiting: u32,
    /// Joins rejected since the last report.
    rejected: u32,
    /// The share in force and the end of its lease on the proxy's own clock.
    lease: Option<(u32, Millis)>,
    /// The largest share it ever acted on (bounds what it can have admitted).
    max_acted: u32,
    /// The session TTL it reports (0: none).
    session_ttl_ms: Millis,
    /// Which process it is (a crash starts the next one).
    incarnation: u64,
}

impl Proxy {
    fn new(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            ..Self::default()
        }
    }

    /// The share it enforces at `now` (safe share 0 without a lease).
    fn share(&self, now: Millis) -> Option<u32> {
        self.lease.filter(|&(_, until)| now < until).map(|(s, _)| s)
    }

    /// Every waiting hunter tries once: admitted while below the share, else rejected.
    fn admit(&mut self, now: Millis) {
        let share = self.share(now).unwrap_or(0);
        let n = share.saturating_sub(self.active).min(self.waiting);
        self.active += n;
        self.waiting -= n;
        self.rejected += self.waiting;
    }

    fn report(&mut self, now: Millis) -> Report {
        let r = Report {
            active: self.active,
            rejected: self.rejected,
            share: self.share(now),
            session_ttl_ms: self.session_ttl_ms,
            incarnation: self.incarnation,
        };
        self.rejected = 0;
        r
    }

    fn apply(&mut self, grant: &Grant, sent: Millis) {
        self.lease = Some((grant.share, sent + grant.lease_ms));
        self.max_acted = self.max_acted.max(grant.share);
    }

    /// A fresh process with the same id: no sessions, no lease.
    fn crash(&mut self) {
        let id = std::mem::take(&mut self.id);
        let (ttl, incarnation) = (self.session_ttl_ms, self.incarnation);
        *self = Self::new(&id);
        self.session_ttl_ms = ttl;
        self.incarnation = incarnation + 1;
    }
}

fn cfg() -> AllocatorConfig {
    AllocatorConfig::default()
}

/// A fleet of proxies against one hunt's allocator, with invariant checks at every exchange.
struct World {
    alloc: HuntAllocation,
    proxies: Vec<Proxy>,
    limit: u32,
    now: Millis,
    config: AllocatorConfig,
}

impl World {
    fn new(ids: &[&str], limit: u32) -> Self {
        Self {
            alloc: HuntAllocation::new(0),
            proxies: ids.iter().map(|id| Proxy::new(id)).collect(),
            limit,
            now: 1_000_000,
            config: cfg(),
        }
    }

    fn committed(&self) -> u64 {
        self.alloc.committed_total(self.now, &self.config)
    }

    fn active(&self) -> u32 {
        self.proxies.iter().map(|p| p.active).sum()
    }

    /// Proxy `i` admits, reports and applies the answer.
    fn exchange(&mut self, i: usize) -> Grant {
        let now = self.now;
        let p = &mut self.proxies[i];
        p.admit(now);
        let report = p.report(now);
        let grant = self
            .alloc
            .report(&p.id, report, self.limit, now, &self.config);
        p.apply(&grant, now);
        grant
    }

    /// One round: every listed proxy exchanges once, a third of a second apart (a round is
    /// one second). Returns the grants by proxy index.
    fn round(&mut self, who: &[usize]) -> Vec<(usize, Grant)> {
        let mut out = Vec::new();
        for &i in who {
            let before = self.committed();
            let g = self.exchange(i);
            let after = self.committed();
            assert!(
                after <= u64::from(self.limit) || after <= before,
                "Σ committed rose past the limit: {before} → {after} > {}",
                self.limit
            );
            out.push((i, g));
            self.now += 1000 / who.len().max(1) as u64;
        }
        for p in &mut self.proxies {
            p.admit(self.now);
        }
        out
    }

    fn all(&self) -> Vec<usize> {
        (0..self.proxies.len()).collect()
    }
}

/// 600 hunters, 70 % / 20 % / 10 % over three proxies (60 arrivals a second for 10 s),
/// against a fleet limit of 100. Returns the world and the round at which ≥ 95 were admitted.
fn settled_70_20_10() -> (World, usize) {
    let mut w = World::new(&["a", "b", "c"], 100);
    let mut settled = None;
    for round in 1..=20 {
        if round <= 10 {
            w.proxies[0].waiting += 42;
            w.proxies[1].waiting += 12;
            w.proxies[2].waiting += 6;
        }
        let all = w.all();
        w.round(&all);
        assert!(w.active() <= 100, "round {round}: {} active", w.active());
        if settled.is_none() && w.active() >= 95 {
            settled = Some(round);
        }
    }
    (w, settled.unwrap())
}

/// The worked example: all 100 seats are in use after the second round (exchange),
/// Σ active never exceeds 100, and Σ committed never exceeds the limit.
#[test]
fn worked_example_70_20_10_settles_at_or_above_95() {
    let (w, settled) = settled_70_20_10();
    assert_eq!(settled, 2, "settled at round {settled}");
    assert_eq!(w.active(), 100);
    assert!(w.committed() <= 100);
    let v = w.alloc.view(w.now, &w.config);
    assert_eq!(v.limit, 100);
    assert_eq!(v.active, 100);
    assert_eq!(v.holders, 3);
    assert_eq!(v.proxies_known, 3);
    assert!(v.committed <= 100 && v.granted <= 100);
    // The split follows the arrival rates (42/12/6 a second) seen over the first two
    // exchanges; seats once filled are never reclaimed, so it stays.
    let shares: Vec<u32> = w.proxies.iter().map(|p| p.active).collect();
    assert_eq!(shares, vec![78, 14, 8]);
}

/// Demand moves: a's hunters leave (60 sessions end), c gets a burst. The seats a gives up
/// reach c in 3 rounds (a's grant is lowered at its next exchange, a acknowledges at the one
/// after, c's exchange after that gets the seats), and the cap holds throughout.
#[test]
fn capacity_follows_demand_from_a_to_c() {
    let (mut w, _) = settled_70_20_10();
    for p in &mut w.proxies {
        p.waiting = 0;
    }
    let before = w.proxies[2].active;
    let a_now = w.proxies[0].active;
    w.proxies[0].active = a_now - 60;
    w.proxies[2].waiting = 500;
    let mut followed = None;
    for round in 1..=10 {
        let all = w.all();
        w.round(&all);
        assert!(w.active() <= 100);
        // c gets everything but the headroom a and b keep.
        if followed.is_none() && w.proxies[2].active >= before + 60 - 2 * 3 {
            followed = Some(round);
        }
    }
    let followed = followed.unwrap_or_else(|| panic!("{:?}", w.alloc.view(w.now, &w.config)));
    assert_eq!(followed, 3, "followed after {followed} rounds");
    // a and b keep their sessions (b its headroom too, if c did not take it first).
    assert_eq!(w.proxies[0].active, a_now - 60);
    assert_eq!(w.active(), 98);
}

/// A proxy goes silent (its process dies, its sessions with it): its share is counted until
/// its lease and the margin have passed, then returns to the others.
#[test]
fn silent_proxy_share_returns_after_the_lease() {
    let (mut w, _) = settled_70_20_10();
    for p in &mut w.proxies {
        p.waiting = 0;
    }
    let b_share = w.proxies[1].share(w.now).unwrap();
    assert!(b_share > 0);
    let last_b = w.alloc.proxies["b"].lease_until_ms;
    w.proxies[1].crash();
    w.proxies[2].waiting = 500;
    let window = w.config.window_ms();
    while w.now < last_b + window + 2000 {
        let before_end = w.now < last_b + w.config.expiry_margin_ms;
        w.round(&[0, 2]);
        if before_end {
            // b's seats are still counted: c cannot have taken them.
            assert!(w.alloc.proxies.contains_key("b"));
            assert!(w.proxies[0].active + w.proxies[2].active + b_share <= 100);
        }
    }
    assert!(!w.alloc.proxies.contains_key("b"));
    let v = w.alloc.view(w.now, &w.config);
    assert_eq!(v.proxies_known, 2);
    assert!(
        w.proxies[2].active >= 100 - w.proxies[0].active - 3,
        "{v:?}"
    );
}

/// A proxy that reports its session TTL and then stops (a crash, a scale-in) keeps its
/// seats past its lease, until every session it may have admitted must have expired: its
/// hunters may go on playing through other proxies, uncounted there until their next
/// renewal. Only then do its seats go to the others.
#[test]
fn silent_proxy_with_a_session_ttl_keeps_its_seats_until_its_sessions_expire() {
    let ttl: Millis = 60_000;
    let (mut w, _) = settled_70_20_10();
    for p in &mut w.proxies {
        p.waiting = 0;
        p.session_ttl_ms = ttl;
    }
    let all = w.all();
    w.round(&all);
    let b_active = w.proxies[1].active;
    let b_share = w.proxies[1].share(w.now).unwrap();
    assert!(b_active > 0);
    let last_b = w.alloc.proxies["b"].last_report_ms;
    // b stops; its hunters keep playing elsewhere with their tickets.
    w.proxies[1].lease = None;
    w.proxies[2].waiting = 500;
    // (A round takes a second: the last one ends before b's sessions do.)
    while w.now + 1_000 < last_b + ttl {
        w.round(&[0, 2]);
        let others = w.proxies[0].active + w.proxies[2].active;
        assert!(
            others + b_active <= 100,
            "{others} admitted beside b's {b_active} live sessions"
        );
        let v = w.alloc.view(w.now, &w.config);
        if w.now > last_b + w.config.window_ms() {
            assert_eq!(v.silent, 1, "{v:?}");
            assert_eq!(v.proxies["b"].share, 0);
            assert!(v.proxies["b"].held >= b_share.max(b_active));
        }
    }
    // Once b's sessions must have expired, its seats go to c.
    while w.now < last_b + w.config.window_ms() + ttl + 3_000 {
        w.round(&[0, 2]);
    }
    assert!(!w.alloc.proxies.contains_key("b"));
    // a (no demand) keeps its headroom; c gets everything else.
    let a = w.proxies[0].active;
    assert_eq!(w.proxies[2].active, 100 - a - w.config.headroom(a));
}

/// A new proxy (scale-out) gets a share at its first exchange when there is spare.
#[test]
fn new_proxy_gets_a_share_at_its_first_report() {
    let mut w = World::new(&["a", "b", "c"], 100);
    for _ in 0..5 {
        w.proxies[0].waiting += 10;
        w.proxies[1].waiting += 5;
        let all = w.all();
        w.round(&all);
    }
    assert_eq!(w.active(), 75);
    w.proxies.push(Proxy::new("d"));
    w.proxies[3].waiting = 40;
    w.proxies[3].admit(w.now);
    let g = w.exchange(3);
    assert!(g.share > 0, "{g:?}");
    assert!(w.committed() <= 100);
}

/// The limit is cut from 100 to 50 with 100 sessions active: shares fall to what the limit
/// allows (0 while the fleet holds more than 50 seats), nothing is evicted, Σ committed never
/// grows, is at most 50 once a lease has passed, and once the fleet is back under 50 it stays
/// there while admissions resume.
#[test]
fn limit_cut_100_to_50_drains_without_violating_sums() {
    let (mut w, _) = settled_70_20_10();
    for p in &mut w.proxies {
        p.waiting = 200;
    }
    w.limit = 50;
    let cut_at = w.now;
    let mut prev = w.committed();
    let mut was_under = false;
    for round in 0..40 {
        // Sessions end: a tenth of each proxy's, every other second.
        if round % 2 == 0 {
            for p in &mut w.proxies {
                p.active -= p.active.div_ceil(10);
            }
        }
        let all = w.all();
        for (_, g) in w.round(&all) {
            assert!(g.share <= 50);
        }
        let c = w.committed();
        assert!(
            c <= prev.max(50),
            "Σ committed grew past the limit: {prev} → {c}"
        );
        prev = c;
        if w.now >= cut_at + w.config.window_ms() {
            assert!(c <= 50, "Σ committed {c} after the window");
        }
        if was_under {
            assert!(w.active() <= 50, "round {round}: {} active", w.active());
        }
        was_under |= w.active() <= 50;
    }
    assert!(was_under);
    assert!(w.active() >= 45, "admissions resumed: {}", w.active());
}

/// A restarted governor (state lost) learns for `learning_ms`: every grant is capped by the
/// share the proxy reports enforcing, a new proxy with demand gets nothing, and seats freed
/// meanwhile are not handed out. Afterwards allocation resumes.
#[test]
fn learning_after_restart_grants_nothing_new() {
    let (mut w, _) = settled_70_20_10();
    for p in &mut w.proxies {
        p.waiting = 0;
    }
    let restart = w.now;
    let fleet = Fleet::starting(restart, &w.config);
    assert_eq!(fleet.learning_until_ms, restart + w.config.learning_ms);
    w.alloc = HuntAllocation::new(fleet.learning_until_ms);
    w.proxies[0].active -= 30; // seats freed during learning
    w.proxies.push(Proxy::new("d"));
    w.proxies[3].waiting = 100;
    let mut exchanges = 0;
    while w.now < fleet.learning_until_ms {
        for i in 0..w.proxies.len() {
            let enforced = w.proxies[i].share(w.now);
            let learning = w.now < fleet.learning_until_ms;
            let g = w.exchange(i);
            assert_eq!(g.learning, learning);
            if learning {
                assert!(g.share <= enforced.unwrap_or(0), "{i}: {g:?}");
                exchanges += 1;
            }
            w.now += 250;
        }
        assert_eq!(w.proxies[3].active, 0);
        assert!(w.committed() <= 100);
    }
    assert!(exchanges >= 20);
    for _ in 0..4 {
        let all = w.all();
        w.round(&all);
        assert!(w.active() <= 100);
    }
    assert!(
        w.proxies[3].active >= 20,
        "d after learning: {}",
        w.proxies[3].active
    );
}

/// A lowered grant whose answer is lost keeps counting the old share until that lease ends;
/// a proxy restarting under the same id (no lease) does not release it either.
#[test]
fn lost_answer_keeps_the_old_share_counted() {
    let c = cfg();
    let mut h = HuntAllocation::new(0);
    let t0 = 10_000;
    let g = h.report(
        "a",
        Report {
            active: 0,
            rejected: 50,
            share: None,
            ..Report::default()
        },
        100,
        t0,
        &c,
    );
    assert_eq!(g.share, 50 + c.min_headroom);
    // a acknowledges, has no demand any more: lowered to its headroom. Answer lost.
    let g2 = h.report(
        "a",
        Report {
            active: 10,
            rejected: 0,
            share: Some(g.share),
            ..Report::default()
        },
        100,
        t0 + 1000,
        &c,
    );
    assert!(g2.share < g.share);
    assert_eq!(h.proxies["a"].committed(t0 + 1000, &c), g.share);
    // Its next report still says the old share: still counted, until its lease ends.
    let g3 = h.report(
        "a",
        Report {
            active: 10,
            rejected: 0,
            share: Some(g.share),
            ..Report::default()
        },
        100,
        t0 + 2000,
        &c,
    );
    assert_eq!(h.proxies["a"].committed(t0 + 2000, &c), g.share);
    // b wants everything: it gets only what a cannot be acting on.
    let gb = h.report(
        "b",
        Report {
            active: 0,
            rejected: 100,
            share: None,
            ..Report::default()
        },
        100,
        t0 + 2100,
        &c,
    );
    assert_eq!(gb.share, 100 - g.share);
    // a's process restarts (same id, no lease): its claims stay until they end.
    let _ = h.report(
        "a",
        Report {
            active: 0,
            rejected: 0,
            share: None,
            ..Report::default()
        },
        100,
        t0 + 3000,
        &c,
    );
    assert_eq!(h.proxies["a"].committed(t0 + 3000, &c), g.share);
    // After the old lease (+ margin), only the latest claim is left.
    let end = g.lease_until_ms + c.expiry_margin_ms;
    assert!(h.proxies["a"].committed(end, &c) <= g3.share.max(g2.share));
    // Acknowledging the latest grant releases everything older at once.
    let latest = h.proxies["a"].granted.unwrap();
    let _ = h.report(
        "a",
        Report {
            active: 0,
            rejected: 0,
            share: Some(latest),
            ..Report::default()
        },
        100,
        t0 + 3500,
        &c,
    );
    assert!(h.proxies["a"].committed(t0 + 3500, &c) <= latest.max(c.min_headroom));
}

#[test]
fn state_round_trips_through_json() {
    let (w, _) = settled_70_20_10();
    let mut fleet = Fleet::default();
    fleet.hunts.insert("hunt-001".into(), w.alloc.clone());
    let json = serde_json::to_string(&fleet).unwrap();
    let back: Fleet = serde_json::from_str(&json).unwrap();
    assert_eq!(back, fleet);
    let view = serde_json::to_value(back.view(w.now, &w.config)).unwrap();
    assert_eq!(view["hunt-001"]["limit"], 100);
    assert_eq!(
        view["hunt-001"]["proxies"]["a"]["active"],
        w.proxies[0].active
    );
    let report: Report = serde_json::from_str(r#"{"active":3,"rejected":1}"#).unwrap();
    assert_eq!(report.share, None);
    assert!(serde_json::from_str::<Report>(r#"{"active":3,"rejected":1,"x":1}"#).is_err());
}

#[test]
fn fleet_expires_hunts_nobody_holds() {
    let c = cfg();
    let mut f = Fleet::default();
    let g = f.report(
        "h",
        "a",
        Report {
            active: 0,
            rejected: 5,
            share: None,
            ..Report::default()
        },
        10,
        1000,
        &c,
    );
    assert_eq!(g.share, 5 + c.min_headroom);
    f.expire(g.lease_until_ms + c.expiry_margin_ms - 1, &c);
    assert_eq!(f.hunts.len(), 1);
    f.expire(g.lease_until_ms + c.expiry_margin_ms, &c);
    assert!(f.hunts.is_empty());
    // A hunt first seen during learning inherits the fleet's learning period.
    let mut f = Fleet::starting(1000, &c);
    let g = f.report(
        "h",
        "a",
        Report {
            active: 0,
            rejected: 5,
            share: None,
            ..Report::default()
        },
        10,
        2000,
        &c,
    );
    assert!(g.learning);
    assert_eq!(g.share, 0);
}

#[test]
fn config_defaults_and_validation() {
    let c = AllocatorConfig::default();
    assert_eq!(
        (c.lease_ms, c.learning_ms, c.expiry_margin_ms),
        (5000, 5500, 500)
    );
    assert_eq!((c.min_headroom, c.headroom_ratio), (2, 0.05));
    c.validate().unwrap();
    assert_eq!(c.headroom(0), 2);
    assert_eq!(c.headroom(100), 5);
    assert_eq!(c.headroom(101), 6);
    let short = AllocatorConfig {
        learning_ms: 5000,
        ..c
    };
    assert!(short
        .validate()
        .unwrap_err()
        .to_string()
        .contains("learning_ms"));
    let zero = AllocatorConfig { lease_ms: 0, ..c };
    assert!(zero.validate().is_err());
    let ratio = AllocatorConfig {
        headroom_ratio: f64::NAN,
        ..c
    };
    assert!(ratio.validate().is_err());
    let parsed: AllocatorConfig =
        serde_json::from_str(r#"{"lease_ms": 3000, "learning_ms": 4000}"#).unwrap();
    assert_eq!(parsed.min_headroom, 2);
    assert!(serde_json::from_str::<AllocatorConfig>(r#"{"lease": 3}"#).is_err());
}

#[test]
fn targets_worked_examples() {
    let w = |active, extra| Want { active, extra };
    // Spare 70 over wants 10, 50, 50: 10, 30, 30.
    assert_eq!(
        targets(100, &[w(10, 10), w(10, 50), w(10, 50)]),
        vec![20, 40, 40]
    );
    // Unwanted spare stays unallocated.
    assert_eq!(targets(100, &[w(5, 2), w(0, 2)]), vec![7, 2]);
    // Remainder goes to the first unsatisfied wants.
    assert_eq!(water_fill(10, &[9, 9, 9]), vec![4, 3, 3]);
    // Drain-down: proportional, never above active.
    assert_eq!(
        targets(50, &[w(70, 9), w(20, 9), w(10, 9)]),
        vec![35, 10, 5]
    );
    assert_eq!(targets(0, &[w(3, 1)]), vec![0]);
    assert!(targets(10, &[]).is_empty());
}

// ---------------------------------------------------------------------------------------
// Properties

/// Brute-force reference: one unit at a time to the least-served unsatisfied want.
fn water_fill_by_units(capacity: u64, wants: &[u32]) -> Vec<u32> {
    let mut fill = vec![0u32; wants.len()];
    for _ in 0..capacity {
        let next = (0..wants.len())
            .filter(|&i| fill[i] < wants[i])
            .min_by_key(|&i| (fill[i], i));
        match next {
            Some(i) => fill[i] += 1,
            None => break,
        }
    }
    fill
}

#[derive(Debug, Clone)]
enum Op {
    /// Hunters arrive at a proxy and try to join.
    Arrive(usize, u32),
    /// Sessions end at a proxy.
    Leave(usize, u32),
    /// A proxy reports; the governor processes it `delay` ms later (the proxy may admit
    /// `during` more hunters meanwhile, under its current share); the answer may be lost.
    Exchange {
        proxy: usize,
        delay: Millis,
        during: u32,
        lose: bool,
    },
    Advance(Millis),
    SetLimit(u32),
    /// The process restarts under the same id: no sessions, no lease.
    Crash(usize),
    /// The governor restarts and loses its state.
    Restart,
    /// The governor's state is stored and loaded back (JSON).
    Reload,
    Expire,
}

const PROXIES: usize = 4;

fn op(raise_only: bool) -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..PROXIES, 0u32..40).prop_map(|(p, n)| Op::Arrive(p, n)),
        2 => (0..PROXIES, 0u32..15).prop_map(|(p, n)| Op::Leave(p, n)),
        8 => (0..PROXIES, 0u64..400, 0u32..10, prop::bool::weighted(0.15)).prop_map(
            |(proxy, delay, during, lose)| Op::Exchange { proxy, delay, during, lose }
        ),
        3 => (0u64..4000).prop_map(Op::Advance),
        // With `raise_only` the model keeps the larger of this and the current limit.
        (if raise_only { 1 } else { 2 }) => (0u32..150).prop_map(Op::SetLimit),
        1 => (0..PROXIES).prop_map(Op::Crash),
        1 => Just(Op::Restart),
        1 => Just(Op::Reload),
        1 => Just(Op::Expire),
    ]
}

struct Model {
    world: World,
    /// (time, limit) history, to bound Σ committed by the largest recent limit.
    limits: Vec<(Millis, u32)>,
    /// Proxies heard from since the last governor restart.
    known: [bool; PROXIES],
    /// When each proxy last sent a report.
    last_sent: [Millis; PROXIES],
    /// When the governor last restarted.
    restarted: Option<Millis>,
    /// The limit never drops, and every running proxy reports at least every second (the
    /// fetcher's period): the fleet's sessions must stay within the limit.
    raise_only: bool,
    /// Sessions of crashed processes whose hunters play on through other proxies
    /// (uncounted there), with the time their tickets expire at the latest.
    orphans: Vec<(Millis, u32)>,
}

/// The session TTL the proxies of the raise-only model report.
const MODEL_TTL_MS: Millis = 8_000;

impl Model {
    fn new(raise_only: bool) -> Self {
        let ids = ["p0", "p1", "p2", "p3"];
        let mut world = World::new(&ids, 100);
        for (i, p) in world.proxies.iter_mut().enumerate() {
            p.incarnation = 1 + i as u64 * 1_000;
            if raise_only {
                p.session_ttl_ms = MODEL_TTL_MS;
            }
        }
        Self {
            orphans: Vec::new(),
            limits: vec![(world.now, 100)],
            world,
            known: [false; PROXIES],
            last_sent: [0; PROXIES],
            restarted: None,
            raise_only,
        }
    }

    /// The largest limit in force during the last `learning_ms + expiry_margin_ms` (a lease
    /// granted before a cut may be counted that long), reaching back as far before the
    /// latest governor restart while that restart is recent (a restarted governor counts
    /// what proxies report until its learning period and the margin have passed).
    fn recent_limit(&self) -> u32 {
        let now = self.world.now;
        let c = &self.world.config;
        let window = c.learning_ms + c.expiry_margin_ms;
        let mut from = now.saturating_sub(window);
        if let Some(r) = self.restarted.filter(|&r| now < r + window) {
            from = from.min(r.saturating_sub(window));
        }
        let mut max = 0;
        for (i, &(t, l)) in self.limits.iter().enumerate() {
            let until = self.limits.get(i + 1).map_or(Millis::MAX, |&(t2, _)| t2);
            if until > from && t <= now {
                max = max.max(l);
            }
        }
        max
    }

    fn apply(&mut self, op: &Op) {
        if let (true, Op::Advance(ms)) = (self.raise_only, op) {
            // Time passes in steps of at most 100 ms; every proxy reports once a second.
            let end = self.world.now + ms;
            while self.world.now < end {
                self.world.now = end.min(self.world.now + 100);
                for p in 0..PROXIES {
                    if self.world.now >= self.last_sent[p] + 1000 {
                        self.apply(&Op::Exchange {
                            proxy: p,
                            delay: 50,
                            during: 0,
                            lose: false,
                        });
                    }
                }
            }
            self.check();
            return;
        }
        let w = &mut self.world;
        match *op {
            Op::Arrive(p, n) => {
                w.proxies[p].waiting += n;
                w.proxies[p].admit(w.now);
            }
            Op::Leave(p, n) => {
                let p = &mut w.proxies[p];
                p.active = p.active.saturating_sub(n);
            }
            Op::Exchange {
                proxy,
                delay,
                during,
                lose,
            } => {
                let sent = w.now;
                self.last_sent[proxy] = sent;
                let report = w.proxies[proxy].report(sent);
                w.now += delay;
                w.proxies[proxy].waiting += during;
                w.proxies[proxy].admit(w.now);
                w.proxies[proxy].rejected = 0; // counted in the next report's window only
                self.check_active();
                let w = &mut self.world;
                let g = w
                    .alloc
                    .report(&w.proxies[proxy].id, report, w.limit, w.now, &w.config);
                self.known[proxy] = true;
                // No target below the proxy's active while the limit covers the fleet.
                let total: u64 = w.alloc.proxies.values().map(|p| u64::from(p.active)).sum();
                if total <= u64::from(w.limit) {
                    assert!(
                        g.target >= report.active,
                        "target {g:?} < active {report:?}"
                    );
                    // And the grant only falls short while others hold the seats.
                    if g.share < report.active {
                        assert!(
                            w.alloc.held_total(w.now, &w.config) > u64::from(w.limit) || g.learning,
                            "grant {g:?} below active {report:?} with room"
                        );
                    }
                }
                if !lose {
                    w.proxies[proxy].apply(&g, sent);
                }
            }
            Op::Advance(ms) => w.now += ms,
            Op::SetLimit(l) => {
                w.limit = if self.raise_only { l.max(w.limit) } else { l };
                self.limits.push((w.now, w.limit));
            }
            Op::Crash(p) => {
                // Only the governor's current incarnation can know about a proxy's
                // sessions: one restarted without state never heard of a proxy that
                // crashed before reporting to it (the documented limit; the
                // coordination Redis keeps the state across governor restarts).
                if self.raise_only && self.known[p] {
                    self.orphans
                        .push((w.now + MODEL_TTL_MS, w.proxies[p].active));
                }
                w.proxies[p].crash();
            }
            Op::Restart => {
                // Silent proxies' sessions are forgotten with the state (see Crash).
                self.orphans.clear();
                w.alloc = HuntAllocation::new(w.now + w.config.learning_ms);
                self.known = [false; PROXIES];
                self.restarted = Some(w.now);
            }
            Op::Reload => {
                let json = serde_json::to_string(&w.alloc).unwrap();
                w.alloc = serde_json::from_str(&json).unwrap();
            }
            Op::Expire => {
                let now = w.now;
                w.alloc.expire(now, &w.config);
            }
        }
        self.check();
    }

    fn check_active(&self) {
        if self.raise_only {
            let w = &self.world;
            let orphaned: u32 = self
                .orphans
                .iter()
                .filter(|(until, _)| w.now < *until)
                .map(|(_, n)| n)
                .sum();
            assert!(
                w.active() + orphaned <= w.limit,
                "Σ active {} + {orphaned} sessions of crashed proxies > limit {}",
                w.active(),
                w.limit
            );
        }
    }

    fn check(&self) {
        let w = &self.world;
        let now = w.now;
        let bound = u64::from(self.recent_limit());
        // The allocator's view: Σ committed within the largest recent limit.
        let committed = w.alloc.committed_total(now, &w.config);
        assert!(
            committed <= bound,
            "Σ committed {committed} > recent limit {bound}"
        );
        // The truth: the shares the proxies actually enforce.
        let enforced: u64 = w
            .proxies
            .iter()
            .map(|p| u64::from(p.share(now).unwrap_or(0)))
            .sum();
        assert!(
            enforced <= bound,
            "Σ enforced {enforced} > recent limit {bound}"
        );
        // Soundness: the allocator never counts less than a known proxy enforces.
        for (i, p) in w.proxies.iter().enumerate() {
            let s = p.share(now).unwrap_or(0);
            if self.known[i] && s > 0 {
                let c = w
                    .alloc
                    .proxies
                    .get(&p.id)
                    .map_or(0, |l| l.committed(now, &w.config));
                assert!(c >= s, "{}: enforces {s}, counted {c}", p.id);
            }
            assert!(p.active <= p.max_acted, "{}: honest model", p.id);
        }
        self.check_active();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any sequence of exchanges, lost answers, delays, crashes, restarts, limit changes and
    /// time: Σ committed and Σ enforced never exceed the largest limit of the last
    /// learning period (the limit itself, once a cut is a lease old); the allocator never
    /// under-counts a proxy it heard from; no target is below the proxy's active count while
    /// the limit covers the fleet.
    #[test]
    fn sums_hold_under_any_sequence(ops in prop::collection::vec(op(false), 1..50)) {
        let mut m = Model::new(false);
        for op in &ops {
            m.apply(op);
        }
    }

    /// The same with a limit that never drops: the simulated fleet, admitting only below the
    /// share it holds, never has more sessions than the limit.
    #[test]
    fn fleet_never_over_admits(ops in prop::collection::vec(op(true), 1..50)) {
        let mut m = Model::new(true);
        for op in &ops {
            m.apply(op);
        }
    }

    /// Max-min fairness on a static input: exactly the unit-by-unit reference; every target
    /// in [active, active + extra] while the limit covers the fleet, Σ ≤ limit, and no proxy
    /// gets more than an unsatisfied one by more than one seat.
    #[test]
    fn targets_are_max_min_fair(
        limit in 0u32..300,
        wants in prop::collection::vec((0u32..60, 0u32..80), 0..8),
    ) {
        let wants: Vec<Want> = wants.into_iter().map(|(active, extra)| Want { active, extra }).collect();
        let t = targets(limit, &wants);
        prop_assert_eq!(t.len(), wants.len());
        let sum: u64 = t.iter().map(|&x| u64::from(x)).sum();
        prop_assert!(sum <= u64::from(limit));
        let active: u64 = wants.iter().map(|w| u64::from(w.active)).sum();
        if active <= u64::from(limit) {
            let extras: Vec<u32> = wants.iter().map(|w| w.extra).collect();
            let spare = u64::from(limit) - active;
            let fills = water_fill(spare, &extras);
            prop_assert_eq!(&fills, &water_fill_by_units(spare, &extras));
            let filled: u64 = fills.iter().map(|&f| u64::from(f)).sum();
            let wanted: u64 = extras.iter().map(|&e| u64::from(e)).sum();
            prop_assert_eq!(filled, spare.min(wanted));
            for (i, w) in wants.iter().enumerate() {
                prop_assert!(t[i] >= w.active && t[i] - w.active <= w.extra);
                if fills[i] < w.extra {
                    for &f in &fills {
                        prop_assert!(f <= fills[i] + 1);
                    }
                }
            }
        } else {
            for (i, w) in wants.iter().enumerate() {
                prop_assert!(t[i] <= w.active);
            }
        }
    }
}

/// One step of a large fleet (more proxies than `EXACT_UP_TO`, so the allocator works
/// from running sums).
#[derive(Debug, Clone)]
enum LargeOp {
    /// Hunters arrive at proxy `.0`, which then exchanges (its answer lost if `.2`).
    Exchange(usize, u32, bool),
    /// Sessions end at a proxy.
    Leave(usize, u32),
    /// A proxy restarts under its id (no sessions, no lease).
    Crash(usize),
    Advance(Millis),
    SetLimit(u32),
}

const LARGE: usize = EXACT_UP_TO + 36;

fn large_op() -> impl Strategy<Value = LargeOp> {
    prop_oneof![
        10 => (0..LARGE, 0u32..8, prop::bool::weighted(0.1))
            .prop_map(|(p, n, lose)| LargeOp::Exchange(p, n, lose)),
        2 => (0..LARGE, 0u32..6).prop_map(|(p, n)| LargeOp::Leave(p, n)),
        1 => (0..LARGE).prop_map(LargeOp::Crash),
        2 => (0u64..700).prop_map(LargeOp::Advance),
        1 => (50u32..400).prop_map(LargeOp::SetLimit),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// A fleet of more than `EXACT_UP_TO` proxies (running sums, refreshed every
    /// `REFRESH_MS`): no exchange makes Σ committed exceed the limit (or exceed it further
    /// after a cut), no proxy enforces more than the allocator counts for it, and with a
    /// steady limit and everyone wanting more, the fleet fills up without passing it.
    #[test]
    fn large_fleets_hold_the_sums_from_running_sums(
        ops in prop::collection::vec(large_op(), 1..400),
    ) {
        let ids: Vec<String> = (0..LARGE).map(|i| format!("p{i:03}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut w = World::new(&refs, 200);
        for op in &ops {
            match *op {
                LargeOp::Exchange(p, n, lose) => {
                    w.proxies[p].waiting += n;
                    let now = w.now;
                    w.proxies[p].admit(now);
                    let before = w.alloc.committed_total(now, &w.config);
                    let report = w.proxies[p].report(now);
                    let g = w.alloc.report(&w.proxies[p].id, report, w.limit, now, &w.config);
                    let after = w.alloc.committed_total(now, &w.config);
                    prop_assert!(
                        after <= u64::from(w.limit).max(before),
                        "Σ committed {} → {} past the limit {}", before, after, w.limit
                    );
                    if !lose {
                        w.proxies[p].apply(&g, now);
                    }
                    w.now += 7;
                }
                LargeOp::Leave(p, n) => {
                    w.proxies[p].active = w.proxies[p].active.saturating_sub(n);
                }
                LargeOp::Crash(p) => w.proxies[p].crash(),
                LargeOp::Advance(ms) => w.now += ms,
                LargeOp::SetLimit(l) => w.limit = l,
            }
            for p in &w.proxies {
                let enforced = p.share(w.now).unwrap_or(0);
                let counted = w
                    .alloc
                    .proxies
                    .get(&p.id)
                    .map_or(0, |l| l.committed(w.now, &w.config));
                prop_assert!(enforced <= counted, "{} enforces {} counted {}", p.id, enforced, counted);
            }
        }
        // Steady demand everywhere under a steady limit: the fleet fills.
        let limit = w.limit;
        w.now += w.config.window_ms() + 1_000;
        for p in &mut w.proxies {
            p.waiting += 50;
        }
        for _ in 0..12 {
            let all = w.all();
            w.round(&all);
        }
        // Sessions above the limit (admitted before a cut) drain; new ones fill the rest.
        prop_assert!(
            u64::from(w.active()) * 100 >= u64::from(limit) * 95,
            "a steady fleet filled {} of {}", w.active(), limit
        );
    }
}
