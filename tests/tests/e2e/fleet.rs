//! Fleet leases (issue 10): three Envoy processes (2 workers each) and the real
//! governor hold one cap for the whole fleet. Hunters arrive unevenly (70 / 20 /
//! 10 %) against a fleet limit of 100; the cap is checked at every sample from
//! the tickets the clients received (sessions outlive the test). Further tests:
//! demand moving from one proxy to another, scale-out, and a governor restart
//! (the cap holds through its learning period, then allocation resumes).

use std::collections::BTreeSet;
use std::thread;
use std::time::{Duration, Instant};

use huntgate_e2e::metrics::GOVERNOR_FETCH_OK;
use huntgate_e2e::plugin;
use huntgate_e2e::poll::try_poll_until;
use huntgate_e2e::{Client, Envoy, Governor, Metrics, Policies, Upstream};
use serde_json::{json, Value};

use crate::{assert_session, join};

const HUNT: &str = "fleet";
const FLEET_LIMIT: usize = 100;
/// Governor defaults: evaluate every second, no signals; the hunt's limit is pinned.
pub const DEFAULTS: &str = "eval_period_s: 1\nttl_s: 10\nsignals: []\ngovern_unlisted: false\n";

/// A leasing proxy named `proxy`: exchanges every 250 ms, safe share 0.
pub fn plugin_config(proxy: &str) -> serde_json::Value {
    plugin::config(json!({
        // Per-process default, far above the fleet limit: only the leases hold the cap.
        "max_hunters": 1000,
        "governor": {
            "cluster": "governor",
            "leases": true,
            "proxy_id": proxy,
            "poll_interval_ms": 250,
            "safe_share": 0,
        },
    }))
}

#[test]
fn three_proxies_hold_one_fleet_cap_with_uneven_demand() {
    let policies = Policies::new(DEFAULTS);
    policies.set_hunt(
        HUNT,
        &format!("max_hunters: {FLEET_LIMIT}\npin_ratio: 1.0\n"),
    );
    let governor = Governor::start(&policies);
    let upstream = Upstream::start();
    let proxies: Vec<Envoy> = ["gw-a", "gw-b", "gw-c"]
        .iter()
        .map(|id| Envoy::start_with_governor(&plugin_config(id), &upstream, governor.addr()))
        .collect();
    let clients: Vec<_> = proxies.iter().map(Envoy::client).collect();
    // 600 hunters: 70 % arrive at proxy a, 20 % at b, 10 % at c.
    let home = uneven_home;
    let mut admitted: BTreeSet<usize> = BTreeSet::new();
    let mut tickets = Vec::new();
    let mut most = 0;
    // Rounds of joins by everyone not yet admitted, until the cap is reached
    // (the governor first learns for one lease length after it starts).
    let filled = try_poll_until(Duration::from_secs(60), Duration::from_millis(100), || {
        for i in 0..600 {
            if admitted.contains(&i) {
                continue;
            }
            let response = join(&clients[home(i)], HUNT, &format!("h{i}"));
            if response.status == 200 {
                assert_eq!(response.decision().as_deref(), Some("admitted"));
                admitted.insert(i);
                tickets.push((i, response.ticket().expect("a ticket")));
            }
            most = most.max(admitted.len());
            // The cap, at every request: never more sessions than the fleet limit.
            assert!(
                admitted.len() <= FLEET_LIMIT,
                "{} hunters admitted fleet-wide, limit {FLEET_LIMIT}",
                admitted.len()
            );
        }
        (admitted.len() >= FLEET_LIMIT * 95 / 100).then_some(())
    });
    assert!(
        filled.is_some(),
        "only {} of {FLEET_LIMIT} seats were used; fleet: {}",
        admitted.len(),
        governor_fleet(&governor)
    );
    // Each proxy got seats, the busiest the most.
    let per_proxy: Vec<usize> = (0..3)
        .map(|p| admitted.iter().filter(|i| home(**i) == p).count())
        .collect();
    assert!(
        per_proxy[0] > per_proxy[1] && per_proxy[0] > per_proxy[2],
        "{per_proxy:?}"
    );
    // Stickiness: every admitted hunter passes on another proxy with its ticket.
    for (i, ticket) in &tickets {
        let other = &clients[(home(*i) + 1) % 3];
        assert_session(other, HUNT, &format!("h{i}"), ticket);
    }
    // A last round: still at most the fleet limit.
    for i in 0..600 {
        if !admitted.contains(&i) && join(&clients[home(i)], HUNT, &format!("h{i}")).status == 200 {
            admitted.insert(i);
        }
    }
    assert!(admitted.len() <= FLEET_LIMIT, "{} admitted", admitted.len());

    // Kill proxy c (a crash, or a scale-in): its hunters go on playing through
    // a and b with their tickets, uncounted there until their next renewal, so
    // the governor keeps c's seats past its lease, until its sessions can have
    // expired (session TTL after its lease; 300 s here): new joins get at most
    // what was still free, at every request, well past c's lease.
    let mut proxies = proxies;
    let killed = proxies.remove(2);
    drop(killed);
    let c_tickets: Vec<&(usize, String)> = tickets.iter().filter(|(i, _)| home(*i) == 2).collect();
    let c_seats = c_tickets.len();
    let free = FLEET_LIMIT - admitted.len();
    let mut refill = 0;
    let mut join_round = |admitted: &mut BTreeSet<usize>| {
        for i in 600..700 {
            if admitted.contains(&i) {
                continue;
            }
            if join(&clients[i % 2], HUNT, &format!("h{i}")).status == 200 {
                refill += 1;
                admitted.insert(i);
            }
            assert!(
                refill <= free,
                "{refill} new seats with {free} free: the killed proxy's {c_seats} \
                 live sessions were given away"
            );
        }
    };
    // Until the governor sees c's lease over (c is silent), then once more.
    let silent = try_poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
        join_round(&mut admitted);
        let fleet: Value = serde_json::from_str(&governor_fleet(&governor)).ok()?;
        (fleet["hunts"][HUNT]["proxies"]["gw-c"]["silent"] == true).then_some(())
    });
    assert!(
        silent.is_some(),
        "c's lease never ended: {}",
        governor_fleet(&governor)
    );
    join_round(&mut admitted);
    for (i, ticket) in &c_tickets {
        assert_session(&clients[i % 2], HUNT, &format!("h{i}"), ticket);
    }
    let fleet: Value = serde_json::from_str(&governor_fleet(&governor)).expect("JSON");
    let c = &fleet["hunts"][HUNT]["proxies"]["gw-c"];
    assert_eq!(c["silent"], true, "{fleet}");
    assert!(
        c["held"].as_u64().unwrap_or(0) >= c_seats as u64,
        "the killed proxy holds its sessions' seats: {fleet}"
    );
    eprintln!(
        "fleet cap {FLEET_LIMIT}: {most} admitted at most (per proxy {per_proxy:?}); \
         proxy c killed: its {c_seats} sessions kept their seats past its lease \
         ({refill} of {free} free seats given out)"
    );
}

/// The proxy hunter `i` arrives at: 70 % at proxy a (0), 20 % at b, 10 % at c.
fn uneven_home(i: usize) -> usize {
    match i % 10 {
        0..=6 => 0,
        7 | 8 => 1,
        _ => 2,
    }
}

fn governor_fleet(governor: &Governor) -> String {
    Client::new(governor.addr()).get_ok("/v1/fleet")
}

#[test]
fn a_new_proxy_gets_a_share_at_its_first_exchanges() {
    let policies = Policies::new(DEFAULTS);
    policies.set_hunt(HUNT, "max_hunters: 30\npin_ratio: 1.0\n");
    let governor = Governor::start(&policies);
    let upstream = Upstream::start();
    let first = Envoy::start_with_governor(&plugin_config("gw-a"), &upstream, governor.addr());
    let mut admitted = 0;
    let filled = try_poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
        for i in 0..10 {
            if join(&first.client(), HUNT, &format!("a{i}-{admitted}")).status == 200 {
                admitted += 1;
            }
            if admitted == 10 {
                return Some(());
            }
        }
        None
    });
    assert!(filled.is_some(), "the first proxy admitted {admitted}");
    // Scale-out: a second replica joins the fleet and gets seats of the spare 20.
    let second = Envoy::start_with_governor(&plugin_config("gw-b"), &upstream, governor.addr());
    let mut on_second = 0;
    let served = try_poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
        for i in 0..5 {
            if join(&second.client(), HUNT, &format!("b{on_second}-{i}")).status == 200 {
                on_second += 1;
            }
        }
        (on_second >= 5).then_some(())
    });
    assert!(
        served.is_some(),
        "the new proxy got {on_second} seats; fleet: {}",
        governor_fleet(&governor)
    );
    assert!(admitted + on_second <= 30);
}

/// Pause between two rounds of arrivals (the proxies exchange every 250 ms).
const ROUND_PAUSE: Duration = Duration::from_millis(100);
/// Documented bound on how many of its own lease exchanges a proxy with a burst
/// needs until it holds the seats a quiet proxy left unused. The allocator
/// needs about three once the demand is reported (README, "Fleet leases": the
/// quiet proxy's grant is lowered, it acknowledges, the next exchange of the
/// busy one gets the seats); the rest is slack for a loaded machine.
const FOLLOW_EXCHANGES: f64 = 20.0;

/// The allocator's default headroom above the sessions of a proxy without
/// demand, `max(2, ceil(5 % of active))` (governor/src/fleet/config.rs): seats
/// a quiet proxy keeps for the joins it may admit between two exchanges.
fn headroom(active: usize) -> usize {
    2.max(active.div_ceil(20))
}

/// Three proxies gw-a, gw-b, gw-c with leases on, against `governor`.
fn start_proxies(upstream: &Upstream, governor: &Governor) -> Vec<Envoy> {
    ["gw-a", "gw-b", "gw-c"]
        .iter()
        .map(|id| Envoy::start_with_governor(&plugin_config(id), upstream, governor.addr()))
        .collect()
}

/// The governor's view of the hunt (`GET /v1/fleet`); `null` until a proxy reported it.
fn fleet_hunt(governor: &Governor) -> Value {
    let body = governor_fleet(governor);
    let fleet: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("GET /v1/fleet is not JSON ({e}): {body}"));
    fleet["hunts"][HUNT].clone()
}

/// The governor's `huntgate_fleet_learning{hunt}` (None until a proxy reported the hunt).
fn fleet_learning(governor: &Governor) -> Option<bool> {
    let metrics = Metrics::parse(&Client::new(governor.addr()).get_ok("/metrics"));
    metrics
        .get("huntgate_fleet_learning", &[("hunt", HUNT)])
        .map(|value| value == 1.0)
}

/// Lease exchanges `proxy` completed so far (`huntgate_governor_fetch_ok`).
fn exchanges(proxy: &Envoy) -> f64 {
    proxy.metrics().get(GOVERNOR_FETCH_OK, &[]).unwrap_or(0.0)
}

/// One hunt's seats as the clients see them: the tickets new hunters received,
/// per proxy. Every arrival is a hunter never seen before and sessions outlive
/// the test, so each admission is one more session fleet-wide; the cap is
/// checked at every request.
struct Seats {
    clients: Vec<Client>,
    limit: usize,
    per_proxy: Vec<usize>,
    arrivals: usize,
}

impl Seats {
    fn new(proxies: &[Envoy], limit: usize) -> Self {
        Self {
            clients: proxies.iter().map(Envoy::client).collect(),
            limit,
            per_proxy: vec![0; proxies.len()],
            arrivals: 0,
        }
    }

    /// Hunters holding a ticket, fleet-wide.
    fn total(&self) -> usize {
        self.per_proxy.iter().sum()
    }

    /// A new hunter joins at `proxy`; whether it was admitted. Panics if the
    /// fleet-wide count passes the limit, or on any answer but 200 or 429.
    fn arrive(&mut self, proxy: usize) -> bool {
        let hunter = format!("h{}", self.arrivals);
        self.arrivals += 1;
        let response = join(&self.clients[proxy], HUNT, &hunter);
        match response.status {
            200 => {
                assert_eq!(
                    response.decision().as_deref(),
                    Some("admitted"),
                    "{}",
                    response.summary()
                );
                assert!(
                    response.ticket().is_some(),
                    "admitted without a ticket: {}",
                    response.summary()
                );
                self.per_proxy[proxy] += 1;
                assert!(
                    self.total() <= self.limit,
                    "{} hunters hold a ticket fleet-wide (per proxy {:?}), limit {}",
                    self.total(),
                    self.per_proxy,
                    self.limit
                );
                true
            }
            429 => false,
            _ => panic!("join of {hunter} at proxy {proxy}: {}", response.summary()),
        }
    }

    /// One round of ten arrivals, 70 / 20 / 10 % over proxies a, b, c.
    fn round_uneven(&mut self) {
        for i in 0..10 {
            self.arrive(uneven_home(i));
        }
    }

    /// Rounds of uneven arrivals until exactly `target` hunters hold a seat
    /// fleet-wide (arrivals stop at the admission that reaches it); false if
    /// `timeout` passes first.
    fn fill_uneven(&mut self, target: usize, timeout: Duration) -> bool {
        try_poll_until(timeout, ROUND_PAUSE, || {
            for i in 0..10 {
                if self.total() >= target {
                    break;
                }
                self.arrive(uneven_home(i));
            }
            (self.total() >= target).then_some(())
        })
        .is_some()
    }
}

/// Demand moves (issue 10): proxy a took most seats, goes quiet with seats
/// still free, and proxy c gets a burst. Proxies without demand keep their
/// sessions plus the documented headroom and nothing more; every other free
/// seat reaches c within [`FOLLOW_EXCHANGES`] of c's exchanges, and the fleet
/// never holds more than the limit.
#[test]
fn capacity_follows_demand_when_it_moves() {
    const LIMIT: usize = 60;
    let policies = Policies::new(DEFAULTS);
    policies.set_hunt(HUNT, &format!("max_hunters: {LIMIT}\npin_ratio: 1.0\n"));
    let governor = Governor::start(&policies);
    let upstream = Upstream::start();
    let proxies = start_proxies(&upstream, &governor);
    let mut seats = Seats::new(&proxies, LIMIT);

    // Phase 1: half the seats, taken mostly at proxy a (after the governor's
    // learning period).
    assert!(
        seats.fill_uneven(LIMIT / 2, Duration::from_secs(60)),
        "only {:?} of {} seats taken; fleet: {}",
        seats.per_proxy,
        LIMIT / 2,
        governor_fleet(&governor)
    );
    let (a, b, c_before) = (seats.per_proxy[0], seats.per_proxy[1], seats.per_proxy[2]);

    // Phase 2: a and b go quiet, c gets the burst. Everything but a's and b's
    // sessions and their headroom is c's to take.
    let reachable = LIMIT - (a + headroom(a)) - (b + headroom(b));
    let wanted = (reachable * 95).div_ceil(100);
    let started = Instant::now();
    let exchanges_before = exchanges(&proxies[2]);
    let mut rounds = 0;
    let followed = try_poll_until(Duration::from_secs(60), ROUND_PAUSE, || {
        rounds += 1;
        for _ in 0..10 {
            seats.arrive(2);
            if seats.per_proxy[2] >= wanted {
                return Some(());
            }
        }
        None
    });
    let took = started.elapsed();
    let c_exchanges = exchanges(&proxies[2]) - exchanges_before;
    eprintln!(
        "burst at c: {} seats (wanted {wanted}) after {took:?}, {rounds} rounds, \
         {c_exchanges} exchanges of c",
        seats.per_proxy[2]
    );
    assert!(
        followed.is_some(),
        "proxy c holds {} seats after {took:?} ({c_exchanges} exchanges), wanted {wanted} \
         of the {reachable} a ({a}) and b ({b}) leave; fleet: {}",
        seats.per_proxy[2],
        governor_fleet(&governor)
    );
    assert!(
        c_exchanges <= FOLLOW_EXCHANGES,
        "proxy c needed {c_exchanges} exchanges to reach {wanted} seats (bound {FOLLOW_EXCHANGES})"
    );
    let reached = seats.per_proxy[2];

    // The quiet proxies hold no more than their sessions plus the headroom.
    let quiet = try_poll_until(Duration::from_secs(15), ROUND_PAUSE, || {
        let hunt = fleet_hunt(&governor);
        let share = |proxy: &str| hunt["proxies"][proxy]["share"].as_u64();
        let (Some(share_a), Some(share_b)) = (share("gw-a"), share("gw-b")) else {
            return None;
        };
        let within = |share: u64, active: usize| share <= (active + headroom(active)) as u64;
        (within(share_a, a) && within(share_b, b)).then_some((share_a, share_b))
    });
    let Some((share_a, share_b)) = quiet else {
        panic!(
            "quiet proxies hold more than sessions + headroom (a {a}, b {b}); fleet: {}",
            governor_fleet(&governor)
        );
    };

    // The burst goes on: the spare is max-min fair over each proxy's extra
    // (demand + growth + headroom), so as it shrinks the quiet proxies'
    // headroom is shared with c's demand too, and the fleet fills to at least
    // 95 % of the limit with demand at c only; never above the limit.
    let fleet_wanted = (LIMIT * 95).div_ceil(100);
    let filled = try_poll_until(Duration::from_secs(30), ROUND_PAUSE, || {
        for _ in 0..5 {
            seats.arrive(2);
        }
        (seats.total() >= fleet_wanted).then_some(())
    });
    let fill_took = started.elapsed();
    for _ in 0..10 {
        for _ in 0..5 {
            seats.arrive(2);
        }
        thread::sleep(ROUND_PAUSE);
    }
    eprintln!(
        "demand moved (limit {LIMIT}): phase 1 a {a} / b {b} / c {c_before}; the burst at c \
         reached {reached} of {reachable} reachable seats (wanted {wanted}) in {took:?}, \
         {rounds} rounds, {c_exchanges} exchanges of c; quiet shares a {share_a} b {share_b}; \
         fleet at {fleet_wanted} after {fill_took:?}; at the end c {} (total {})",
        seats.per_proxy[2],
        seats.total()
    );
    assert!(
        filled.is_some(),
        "with demand at c only the fleet holds {} of {LIMIT} (per proxy {:?}); fleet: {}",
        seats.total(),
        seats.per_proxy,
        governor_fleet(&governor)
    );
}

/// A governor restart (issue 10): the restarted governor knows no lease in
/// flight, so through its learning period it grants no seat the proxies did
/// not already hold, while hunters keep arriving at every proxy; once it has
/// learned, allocation resumes and the fleet fills to at least 95 % of the
/// limit, never above it.
#[test]
fn governor_restart_holds_the_cap_through_learning() {
    const LIMIT: usize = 50;
    const FILLED: usize = 30;
    let policies = Policies::new(DEFAULTS);
    policies.set_hunt(HUNT, &format!("max_hunters: {LIMIT}\npin_ratio: 1.0\n"));
    let governor = Governor::start(&policies);
    let addr = governor.addr();
    let upstream = Upstream::start();
    let proxies = start_proxies(&upstream, &governor);
    let mut seats = Seats::new(&proxies, LIMIT);
    assert!(
        seats.fill_uneven(FILLED, Duration::from_secs(60)),
        "only {:?} of {FILLED} seats taken; fleet: {}",
        seats.per_proxy,
        governor_fleet(&governor)
    );

    // Quiet until the leases settle: the governor has counted every proxy's
    // sessions, each holds them plus the headroom, and nothing else is in
    // flight. Those seats are all the fleet may use until the restarted
    // governor has learned.
    let per_proxy = seats.per_proxy.clone();
    let settled = try_poll_until(Duration::from_secs(20), ROUND_PAUSE, || {
        let hunt = fleet_hunt(&governor);
        let all = ["gw-a", "gw-b", "gw-c"]
            .iter()
            .zip(&per_proxy)
            .all(|(id, &active)| {
                let proxy = &hunt["proxies"][id];
                let share = proxy["share"].as_u64();
                proxy["active"].as_u64() == Some(active as u64)
                    && share.is_some_and(|s| s <= (active + headroom(active)) as u64)
                    && proxy["committed"].as_u64() == share
            });
        all.then(|| hunt["committed"].as_u64()).flatten()
    });
    let Some(held) = settled else {
        panic!(
            "the leases did not settle at {per_proxy:?} + headroom; fleet: {}",
            governor_fleet(&governor)
        );
    };
    let held = usize::try_from(held).expect("a seat count");

    // Restart on the same address while hunters keep arriving at every proxy.
    let mut outage_rounds = 0;
    let (governor, stopped_in, ready_in) = thread::scope(|scope| {
        let policies = &policies;
        let restart = scope.spawn(move || {
            let mut old = governor;
            let started = Instant::now();
            old.stop();
            let stopped_in = started.elapsed();
            drop(old);
            let new = Governor::start_on(policies, addr)
                .unwrap_or_else(|log| panic!("the governor did not restart on {addr}:\n{log}"));
            (new, stopped_in, started.elapsed())
        });
        while !restart.is_finished() {
            outage_rounds += 1;
            seats.round_uneven();
            thread::sleep(ROUND_PAUSE);
        }
        restart.join().expect("the restart thread panicked")
    });
    let during_outage = seats.total() - FILLED;

    // Through the learning period: the governor says it learns, and the
    // fleet uses no seat beyond those held before. Everything admitted before
    // an observation of `learning 1` was admitted during the outage or the
    // learning period.
    let restarted = Instant::now();
    let wanted = (LIMIT * 95).div_ceil(100);
    let mut learning: Option<(usize, Duration)> = None;
    let mut learned: Option<Duration> = None;
    let resumed = try_poll_until(Duration::from_secs(60), ROUND_PAUSE, || {
        match fleet_learning(&governor) {
            Some(true) => learning = Some((seats.total(), restarted.elapsed())),
            Some(false) if learning.is_some() && learned.is_none() => {
                learned = Some(restarted.elapsed());
            }
            _ => {}
        }
        if learned.is_some() && seats.total() >= wanted {
            return Some(());
        }
        seats.round_uneven();
        None
    });
    let Some((at_learning, learning_seen)) = learning else {
        panic!(
            "the restarted governor never reported learning; fleet: {}",
            governor_fleet(&governor)
        );
    };
    assert!(
        at_learning <= held,
        "{at_learning} seats used during the learning period, but the proxies held only {held}"
    );
    assert!(
        resumed.is_some(),
        "after learning ({learned:?} after the restart) the fleet holds {} of {LIMIT} \
         (per proxy {:?}), wanted {wanted}; fleet: {}",
        seats.total(),
        seats.per_proxy,
        governor_fleet(&governor)
    );
    let learned = learned.expect("allocation resumes only once learning has ended");
    eprintln!(
        "governor restart (limit {LIMIT}): {FILLED} seats, {held} held; stopped in \
         {stopped_in:?}, ready again {ready_in:?} after the stop ({outage_rounds} rounds, \
         {during_outage} admitted meanwhile); learning seen until {learning_seen:?} after \
         ready ({at_learning} seats then), over by {learned:?}; {} seats at {:?} \
         (per proxy {:?})",
        seats.total(),
        restarted.elapsed(),
        seats.per_proxy
    );
}
