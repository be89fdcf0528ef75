//! The filter's metrics as Prometheus sees them on Envoy's admin API.

use std::time::Duration;

use huntgate_e2e::metrics::{
    ADMITTED, BAD_REQUEST, HUNT_ACTIVE, HUNT_LIMIT, REJECTED, TICKET_INVALID,
};
use huntgate_e2e::plugin::{self, HUNTER_HEADER};
use huntgate_e2e::poll::{try_poll_until, POLL_INTERVAL};
use huntgate_e2e::{Envoy, Metrics, Upstream};
use serde_json::json;

use crate::{assert_admitted, assert_hunt_full, join, with_ticket};

/// Gauges are refreshed, and the counters requests move are flushed, on each worker's
/// 1 s tick; a generous bound, as the poll returns as soon as the values are there
/// (a 2-core machine runs many Envoys at once).
const STATS_BOUND: Duration = Duration::from_secs(30);

fn wait_for(envoy: &Envoy, what: &str, check: impl Fn(&Metrics) -> bool) -> Metrics {
    let mut last = None;
    let found = try_poll_until(STATS_BOUND, POLL_INTERVAL, || {
        let metrics = envoy.metrics();
        if check(&metrics) {
            return Some(metrics);
        }
        last = Some(metrics);
        None
    });
    found.unwrap_or_else(|| {
        let seen = last
            .map(|m| m.names_containing("huntgate"))
            .unwrap_or_default();
        panic!(
            "timed out after {STATS_BOUND:?} waiting for {what}; huntgate samples:\n{}",
            seen.join("\n")
        )
    })
}

#[test]
fn counters_and_per_hunt_gauges_in_prometheus() {
    let upstream = Upstream::start();
    let envoy = Envoy::start(&plugin::config(json!({"max_hunters": 2})), &upstream);
    let client = envoy.client();
    let alice = assert_admitted(&join(&client, "m1", "alice"), "m1", 300);
    assert_admitted(&join(&client, "m1", "bob"), "m1", 300);
    assert_hunt_full(&join(&client, "m1", "carol"), "m1", 2, 2);
    assert_eq!(with_ticket(&client, "m1", "alice", &alice).status, 200);
    assert_eq!(with_ticket(&client, "m1", "dave", "forged").status, 429);
    assert_eq!(
        client
            .get("/hunts/bad!id/x", &[(HUNTER_HEADER, "erin")])
            .status,
        400
    );

    let metrics = wait_for(&envoy, "huntgate counters", |m| {
        m.get(ADMITTED, &[]) == Some(2.0)
            && m.get(REJECTED, &[]) == Some(2.0)
            && m.get(BAD_REQUEST, &[]) == Some(1.0)
            && m.get(TICKET_INVALID, &[]) == Some(1.0)
    });
    assert_eq!(metrics.get(ADMITTED, &[]), Some(2.0));

    let metrics = wait_for(&envoy, "per-hunt gauges of m1", |m| {
        m.get(HUNT_ACTIVE, &[("hunt", "m1")]) == Some(2.0)
            && m.get(HUNT_LIMIT, &[("hunt", "m1")]) == Some(2.0)
    });
    assert!(
        metrics.text.contains("# TYPE huntgate_hunt_active gauge"),
        "{}",
        metrics.text
    );
}
