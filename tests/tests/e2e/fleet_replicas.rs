//! Two governor replicas on one coordination Redis (issue 10): three Envoy
//! processes whose `governor` cluster round-robins between the replicas, so
//! every proxy's exchanges alternate. The fleet cap holds at every request;
//! then the coordination Redis stops (proxies keep their leases until they
//! end, then fall back to the safe share; nothing hangs) and comes back empty
//! (the replicas learn again, then allocate).

use std::collections::BTreeMap;
use std::time::Duration;

use huntgate_e2e::poll::try_poll_until;
use huntgate_e2e::{Client, Envoy, Governor, Metrics, Policies, Redis, Upstream};
use serde_json::Value;

use crate::fleet::{plugin_config, DEFAULTS};
use crate::{assert_session, join};

const HUNT: &str = "replicated";
const FLEET_LIMIT: usize = 60;
/// The filter's lease length (the governor's default `lease_ms`).
const LEASE_MS: f64 = 5_000.0;

fn governor_metrics(governor: &Governor) -> Metrics {
    Metrics::parse(&Client::new(governor.addr()).get_ok("/metrics"))
}

fn fleet(governor: &Governor) -> Value {
    serde_json::from_str(&Client::new(governor.addr()).get_ok("/v1/fleet")).expect("JSON")
}

fn lease_age_ms(envoy: &Envoy) -> f64 {
    envoy
        .metrics()
        .get("huntgate_governor_lease_age_ms", &[])
        .unwrap_or(f64::MAX)
}

#[test]
fn two_governor_replicas_on_one_coordination_redis_hold_one_fleet_cap() {
    let mut redis = Redis::start();
    let policies = Policies::new(DEFAULTS);
    policies.set_hunt(
        HUNT,
        &format!("max_hunters: {FLEET_LIMIT}\npin_ratio: 1.0\n"),
    );
    let url = redis.url();
    let replicas: Vec<Governor> = ["ga", "gb"]
        .iter()
        .map(|id| {
            Governor::start_with_args(&policies, &["--coordination", &url, "--replica-id", id])
        })
        .collect();
    let upstream = Upstream::start();
    let proxies: Vec<Envoy> = ["gw-a", "gw-b", "gw-c"]
        .iter()
        .map(|id| {
            Envoy::start_with_governors(
                &plugin_config(id),
                &upstream,
                [replicas[0].addr(), replicas[1].addr()],
            )
        })
        .collect();
    let clients: Vec<Client> = proxies.iter().map(Envoy::client).collect();
    let home = |i: usize| match i % 10 {
        0..=6 => 0,
        7 | 8 => 1,
        _ => 2,
    };
    let mut tickets: BTreeMap<usize, String> = BTreeMap::new();
    // Everyone not yet admitted joins, round after round, until the fleet is
    // nearly full; the cap is checked at every request.
    let join_round = |tickets: &mut BTreeMap<usize, String>, hunters: std::ops::Range<usize>| {
        for i in hunters {
            if tickets.contains_key(&i) {
                continue;
            }
            let response = join(&clients[home(i)], HUNT, &format!("h{i}"));
            assert!(
                [200, 429].contains(&response.status),
                "{}",
                response.summary()
            );
            if response.status == 200 {
                tickets.insert(i, response.ticket().expect("a ticket"));
            }
            assert!(
                tickets.len() <= FLEET_LIMIT,
                "{} hunters admitted fleet-wide, limit {FLEET_LIMIT}",
                tickets.len()
            );
        }
    };
    let filled = try_poll_until(Duration::from_secs(60), Duration::from_millis(100), || {
        join_round(&mut tickets, 0..400);
        (tickets.len() >= FLEET_LIMIT * 95 / 100).then_some(())
    });
    assert!(
        filled.is_some(),
        "only {} of {FLEET_LIMIT} seats used; fleet: {}",
        tickets.len(),
        fleet(&replicas[0])
    );
    // Both replicas answered exchanges, and they show one allocation.
    for replica in &replicas {
        let exchanges = governor_metrics(replica)
            .get("huntgate_fleet_exchanges_total", &[])
            .unwrap_or(0.0);
        assert!(exchanges > 0.0, "a replica answered no exchange");
        let committed = fleet(replica)["hunts"][HUNT]["committed"]
            .as_u64()
            .expect("committed");
        assert!(committed <= FLEET_LIMIT as u64, "committed {committed}");
    }
    let admitted = tickets.len();

    // The coordination Redis stops: exchanges fail, every request is still
    // answered, ticket holders keep playing and the cap holds, through the
    // end of every proxy's lease and after it (safe share 0). Until its lease
    // ends a proxy may still admit into the share it holds.
    let redis_port = redis.addr().port();
    redis.stop();
    let lapsed = try_poll_until(Duration::from_secs(30), Duration::from_millis(200), || {
        join_round(&mut tickets, 400..420);
        proxies
            .iter()
            .all(|p| lease_age_ms(p) > LEASE_MS)
            .then_some(())
    });
    assert!(
        lapsed.is_some(),
        "a proxy's lease stayed in force without Redis"
    );
    let down = governor_metrics(&replicas[0]).get("huntgate_fleet_coordination_up", &[]);
    assert_eq!(down, Some(0.0));
    for (i, ticket) in tickets.iter().take(20) {
        let other = &clients[(home(*i) + 1) % 3];
        assert_session(other, HUNT, &format!("h{i}"), ticket);
    }
    assert!(tickets.len() <= FLEET_LIMIT);
    let held_at_lapse = tickets.len();
    join_round(&mut tickets, 420..440);
    assert_eq!(
        tickets.len(),
        held_at_lapse,
        "a join was admitted on the safe share 0"
    );

    // It comes back empty: the replicas learn, then lease again (every
    // proxy's lease is renewed) and the cap still holds.
    let _redis = Redis::start_on(redis_port);
    let renewed = try_poll_until(Duration::from_secs(40), Duration::from_millis(200), || {
        join_round(&mut tickets, 440..460);
        proxies
            .iter()
            .all(|p| lease_age_ms(p) < LEASE_MS)
            .then_some(())
    });
    assert!(
        renewed.is_some(),
        "leases were not renewed after the Redis came back; fleet: {}",
        fleet(&replicas[1])
    );
    join_round(&mut tickets, 460..500);
    assert!(tickets.len() <= FLEET_LIMIT);
    eprintln!(
        "two replicas, fleet cap {FLEET_LIMIT}: {admitted} admitted; Redis stopped and \
         restarted: {} held sessions, never above the cap",
        tickets.len()
    );
}
