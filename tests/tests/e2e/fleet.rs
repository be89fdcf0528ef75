//! Fleet leases (issue 10): three Envoy processes (2 workers each) and the real
//! governor hold one cap for the whole fleet. Hunters arrive unevenly (70 / 20 /
//! 10 %) against a fleet limit of 100; the cap is checked at every sample from
//! the tickets the clients received (sessions outlive the test).

use std::collections::BTreeSet;
use std::time::Duration;

use huntgate_e2e::plugin::{self, HUNTER_HEADER, TICKET_HEADER};
use huntgate_e2e::poll::try_poll_until;
use huntgate_e2e::{Envoy, Governor, Policies, Upstream};
use serde_json::json;

use crate::join;

const HUNT: &str = "fleet";
const FLEET_LIMIT: usize = 100;
/// Governor defaults: evaluate every second, no signals; the hunt's limit is pinned.
const DEFAULTS: &str = "eval_period_s: 1\nttl_s: 10\nsignals: []\ngovern_unlisted: false\n";

fn plugin_config(proxy: &str) -> serde_json::Value {
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
    let home = |i: usize| match i % 10 {
        0..=6 => 0,
        7 | 8 => 1,
        _ => 2,
    };
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
        let response = other.get(
            &format!("/hunts/{HUNT}/move"),
            &[(HUNTER_HEADER, &format!("h{i}")), (TICKET_HEADER, ticket)],
        );
        assert_eq!(
            response.decision().as_deref(),
            Some("session"),
            "{}",
            response.summary()
        );
    }
    // A last round: still at most the fleet limit.
    for i in 0..600 {
        if !admitted.contains(&i) && join(&clients[home(i)], HUNT, &format!("h{i}")).status == 200 {
            admitted.insert(i);
        }
    }
    assert!(admitted.len() <= FLEET_LIMIT, "{} admitted", admitted.len());

    // Kill proxy c (scale-in): its hunters leave with it, and its seats return to
    // the others once its lease ends, never sooner than the lease allows.
    let mut proxies = proxies;
    let killed = proxies.remove(2);
    drop(killed);
    let c_seats = per_proxy[2];
    let mut refill = 0;
    let returned = try_poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
        for i in 600..700 {
            let hunter = format!("h{i}");
            if join(&clients[0], HUNT, &hunter).status == 200 {
                refill += 1;
                admitted.insert(i);
            }
            assert!(
                refill <= c_seats,
                "{refill} seats given out after {c_seats} returned"
            );
        }
        (refill == c_seats).then_some(())
    });
    assert!(
        returned.is_some(),
        "only {refill} of the killed proxy's {c_seats} seats came back; fleet: {}",
        governor_fleet(&governor)
    );
    eprintln!(
        "fleet cap {FLEET_LIMIT}: {most} admitted at most (per proxy {per_proxy:?}); \
         proxy c killed: its {c_seats} seats went to proxy a"
    );
}

fn governor_fleet(governor: &Governor) -> String {
    huntgate_e2e::Client::new(governor.addr()).get_ok("/v1/fleet")
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
