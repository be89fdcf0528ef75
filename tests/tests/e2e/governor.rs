//! The filter fed by a real governor: Envoy (2 workers) + huntgate + the
//! `huntgate-governor` binary over a policy directory the test edits.
//!
//! Every hunt here is governed by an operator pin (`pin_ratio`), so the
//! governor's ratio changes exactly when the test edits the hunt's file, with
//! no Redis or Kafka involved (their signals are tested in `governor/tests`).
//! The limit a worker enforces is read from the 429 body of a join of a full
//! hunt, sent on connections held open on every worker.

use std::time::{Duration, Instant};

use huntgate_e2e::metrics::{GOVERNOR_FETCH_FAILED, GOVERNOR_FETCH_OK};
use huntgate_e2e::plugin::{self, HUNTER_HEADER};
use huntgate_e2e::poll::{poll_until, try_poll_until, POLL_INTERVAL};
use huntgate_e2e::{Connection, Envoy, Governor, Policies, Upstream};
use serde_json::{json, Value};

use crate::{
    assert_admitted, assert_hunt_full, assert_passed, hunter, join, join_path, with_ticket,
};

/// The governed hunt.
const HUNT: &str = "gov";
/// Its `max_hunters`, in the policy and in the plugin config alike.
const MAX_HUNTERS: u64 = 10;
/// Governor defaults: evaluate every second, no signals (pins only).
const DEFAULTS: &str = "eval_period_s: 1\nttl_s: 10\nsignals: []\ngovern_unlisted: false\n";
/// Connections held open per test; Envoy balances them exactly over its 2 workers.
const CONNECTIONS: usize = 4;
/// Plain polling period of the feed.
const POLL_INTERVAL_MS: u64 = 1000;
/// Bound on anything the governor or filter should do within seconds.
const BOUND: Duration = Duration::from_secs(20);

/// The hunt's policy file with the operator pin `ratio`.
fn pinned(ratio: f64) -> String {
    format!("max_hunters: {MAX_HUNTERS}\npin_ratio: {ratio}\n")
}

/// The plugin config: `max_hunters` as in the policy, fed by the governor
/// with the `governor` block `feed` (over the cluster `governor`).
fn plugin_config(feed: Value) -> Value {
    let mut governor = json!({"cluster": "governor"});
    if let (Some(fields), Value::Object(extra)) = (governor.as_object_mut(), feed) {
        fields.extend(extra);
    }
    plugin::config(json!({"max_hunters": MAX_HUNTERS, "governor": governor}))
}

/// Connections held open on every worker of one Envoy; each probe is a join
/// of the governed hunt by a hunter never seen before.
struct Workers {
    connections: Vec<Connection>,
    probes: usize,
}

impl Workers {
    /// Opens [`CONNECTIONS`] connections and checks that every worker holds
    /// at least one.
    fn open(envoy: &Envoy) -> Self {
        let connections: Vec<Connection> = (0..CONNECTIONS)
            .map(|_| Connection::open(envoy.addr()))
            .collect();
        let per_worker = poll_until("the connections to be accepted", BOUND, || {
            let per_worker = envoy.connections_per_worker();
            (per_worker.iter().sum::<u64>() == CONNECTIONS as u64).then_some(per_worker)
        });
        assert!(
            per_worker.len() >= 2 && per_worker.iter().all(|&n| n > 0),
            "connections not spread over every worker: {per_worker:?}"
        );
        Self {
            connections,
            probes: 0,
        }
    }

    /// The limit each connection's worker enforces on the full hunt: the
    /// `limit` of its 429, or `None` when the probe was admitted.
    fn limits(&mut self) -> Vec<Option<u64>> {
        let mut limits = Vec::with_capacity(self.connections.len());
        for connection in &mut self.connections {
            self.probes += 1;
            let probe = format!("probe-{:05}", self.probes);
            let response = connection.get(&join_path(HUNT), &[(HUNTER_HEADER, &probe)]);
            limits.push(match response.status {
                429 => Some(
                    response.json()["limit"]
                        .as_u64()
                        .unwrap_or_else(|| panic!("429 without a limit: {}", response.summary())),
                ),
                200 => None,
                _ => panic!("unexpected probe response: {}", response.summary()),
            });
        }
        limits
    }

    /// Probes until every worker enforces `limit`; returns when that was
    /// first seen.
    fn wait_for_limit(&mut self, limit: u64, bound: Duration) -> Instant {
        let mut last = Vec::new();
        try_poll_until(bound, POLL_INTERVAL, || {
            last = self.limits();
            last.iter().all(|l| *l == Some(limit)).then(Instant::now)
        })
        .unwrap_or_else(|| panic!("workers still enforce {last:?}, not {limit}, after {bound:?}"))
    }
}

/// Waits until the filter has fetched a document from the governor.
fn wait_for_feed(envoy: &Envoy) {
    poll_until("the filter's first successful fetch", BOUND, || {
        (envoy.metrics().get(GOVERNOR_FETCH_OK, &[]).unwrap_or(0.0) >= 1.0).then_some(())
    });
}

/// Admits `n` hunters into the governed hunt; their tickets.
fn admit(envoy: &Envoy, n: usize) -> Vec<String> {
    let client = envoy.client();
    (0..n)
        .map(|i| assert_admitted(&join(&client, HUNT, &hunter(i)), HUNT, 300))
        .collect()
}

/// Asserts that every ticket holder still plays.
fn assert_sessions_pass(envoy: &Envoy, tickets: &[String]) {
    let client = envoy.client();
    for (i, ticket) in tickets.iter().enumerate() {
        assert_passed(&with_ticket(&client, HUNT, &hunter(i), ticket), "session");
    }
}

/// Waits until the governor serves `ratio` for the hunt (it re-reads its
/// policy directory every second); returns when.
fn wait_for_governor(governor: &Governor, ratio: f64) -> Instant {
    poll_until(
        &format!("the governor to serve ratio {ratio}"),
        BOUND,
        || (governor.ratio(HUNT) == Some(ratio)).then(Instant::now),
    )
}

/// Pins the hunt to 0.5 (limit 5), fills it, then pins 0.2 (limit 2) and
/// returns how long after the governor served 0.2 every worker enforced it.
/// Ticket holders keep playing throughout, and a pin of 1.0 opens the hunt
/// again.
fn policy_change_reaches_every_worker(feed: Value) -> Duration {
    let upstream = Upstream::start();
    let policies = Policies::new(DEFAULTS);
    policies.set_hunt(HUNT, &pinned(0.5));
    let governor = Governor::start(&policies);
    let envoy = Envoy::start_with_governor(&plugin_config(feed), &upstream, governor.addr());
    wait_for_feed(&envoy);

    let tickets = admit(&envoy, 5);
    assert_hunt_full(&join(&envoy.client(), HUNT, "late"), HUNT, 5, 5);
    let mut workers = Workers::open(&envoy);
    assert_eq!(workers.limits(), vec![Some(5); CONNECTIONS]);

    policies.set_hunt(HUNT, &pinned(0.2));
    let served = wait_for_governor(&governor, 0.2);
    let enforced = workers.wait_for_limit(2, BOUND);
    assert_sessions_pass(&envoy, &tickets);

    policies.set_hunt(HUNT, &pinned(1.0));
    wait_for_governor(&governor, 1.0);
    poll_until("the hunt to admit again at ratio 1.0", BOUND, || {
        workers.limits().contains(&None).then_some(())
    });

    enforced.saturating_duration_since(served)
}

#[test]
fn a_polled_policy_change_reaches_every_worker() {
    // One fetch per process reaches every worker through shared data (a worker
    // that never saw it would time out in `wait_for_limit`). How fast is a
    // benchmark figure (`make bench`, control path), not asserted here: tests
    // run four at a time on two cores.
    let feed = json!({"poll_interval_ms": POLL_INTERVAL_MS, "long_poll_s": 0});
    let took = policy_change_reaches_every_worker(feed);
    eprintln!(
        "polling every {POLL_INTERVAL_MS} ms: every worker enforced the change \
         {took:?} after the governor served it"
    );
}

#[test]
fn long_poll_delivers_a_change_at_once() {
    // Plain polling would not fetch again for a minute: only the long poll
    // (woken by the governor's change) can deliver the new ratio in time.
    let feed = json!({"poll_interval_ms": 60_000, "long_poll_s": 25});
    let took = policy_change_reaches_every_worker(feed);
    eprintln!("long-poll: every worker enforced the change {took:?} after the governor served it");
    // Behaviour, not speed: the next plain poll is a minute away, so anything
    // under half of that came by the long poll (the latency is a bench figure).
    let bound = Duration::from_secs(30);
    assert!(
        took <= bound,
        "change took {took:?}: not delivered by the long poll (next plain poll in 60 s)"
    );
}

#[test]
fn stopped_governor_keeps_last_ratio_until_max_stale_then_fallback() {
    const MAX_STALE_S: u64 = 4;
    let upstream = Upstream::start();
    let policies = Policies::new(DEFAULTS);
    policies.set_hunt(HUNT, &pinned(0.5));
    let mut governor = Governor::start(&policies);
    let feed = json!({
        "poll_interval_ms": POLL_INTERVAL_MS,
        "long_poll_s": 0,
        "max_stale_s": MAX_STALE_S,
        "on_stale": {"ratio": 0.2},
    });
    let envoy = Envoy::start_with_governor(&plugin_config(feed), &upstream, governor.addr());
    wait_for_feed(&envoy);
    let tickets = admit(&envoy, 5);
    let mut workers = Workers::open(&envoy);
    assert_eq!(workers.limits(), vec![Some(5); CONNECTIONS]);

    // The document was last fetched at most one poll interval before this.
    let stopped = Instant::now();
    governor.stop();
    assert_eq!(
        workers.limits(),
        vec![Some(5); CONNECTIONS],
        "the last ratio must stay in force right after the governor stops"
    );
    poll_until("the filter to count failed fetches", BOUND, || {
        (envoy
            .metrics()
            .get(GOVERNOR_FETCH_FAILED, &[])
            .unwrap_or(0.0)
            >= 1.0)
            .then_some(())
    });

    // Fallback: max_hunters × 0.2 = 2, once the document is max_stale_s old.
    let fell_back = workers.wait_for_limit(2, BOUND);
    let held = fell_back.saturating_duration_since(stopped);
    eprintln!(
        "governor stopped: last ratio held {held:?}, then the fallback (max_stale_s {MAX_STALE_S})"
    );
    let earliest = Duration::from_secs(MAX_STALE_S) - Duration::from_millis(POLL_INTERVAL_MS);
    assert!(
        held >= earliest,
        "fallback after {held:?}, before the document could be {MAX_STALE_S} s old"
    );
    assert_sessions_pass(&envoy, &tickets);

    // The governor comes back where it was: its ratio applies again.
    let _restarted = Governor::start_on(&policies, governor.addr())
        .unwrap_or_else(|log| panic!("governor did not restart:\n{log}"));
    workers.wait_for_limit(5, BOUND);
    assert_sessions_pass(&envoy, &tickets);
}
