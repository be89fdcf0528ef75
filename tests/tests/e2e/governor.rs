//! The filter fed by a real governor: Envoy (2 workers) + huntgate + the
//! `huntgate-governor` binary over a policy directory the test edits.
//!
//! Every hunt here is governed by an operator pin (`pin_ratio`), so the
//! governor's ratio changes exactly when the test edits the hunt's file, with
//! no Redis or Kafka involved (their signals are tested in `governor/tests`).
//! The limit a worker enforces is read from the 429 body of a join of a full
//! hunt, sent on connections held open on every worker.

use std::time::{Duration, Instant};

use huntgate_e2e::fault_governor::{Fault, FaultyGovernor};
use huntgate_e2e::metrics::{GOVERNOR_FETCH_FAILED, GOVERNOR_FETCH_OK, GOVERNOR_UP};
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
        let connections = envoy.connections_on_every_worker(CONNECTIONS, BOUND);
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

/// Runs huntgatectl against `grpc` with `tokens`; its stdout (the command must succeed).
fn huntgatectl(grpc: &str, tokens: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(huntgate_e2e::locate::huntgatectl_binary())
        .args(["--addr", grpc, "--token-file"])
        .arg(tokens)
        .args(args)
        .output()
        .expect("run huntgatectl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "huntgatectl {args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn an_override_set_over_grpc_reaches_every_worker_and_admitted_hunters_keep_playing() {
    // The orchestrator's path end to end: huntgatectl → the governor's gRPC API →
    // the throttle document → the filter's long poll → every worker's limit.
    let upstream = Upstream::start();
    let policies = Policies::new(DEFAULTS);
    policies.set_hunt(HUNT, &format!("max_hunters: {MAX_HUNTERS}\n"));
    let work = tempfile::tempdir().expect("temp dir");
    let tokens = work.path().join("tokens");
    std::fs::write(&tokens, "e2e-orchestrator e2e-token-0123456789abcdef\n").expect("tokens");
    let grpc_addr = format!("127.0.0.1:{}", huntgate_e2e::ports::free_port());
    let token_arg = tokens.to_string_lossy().into_owned();
    let governor = Governor::start_with_args(
        &policies,
        &["--grpc-listen", &grpc_addr, "--grpc-token-file", &token_arg],
    );
    let grpc = format!("http://{grpc_addr}");
    let feed = json!({"poll_interval_ms": 60_000, "long_poll_s": 25});
    let envoy = Envoy::start_with_governor(&plugin_config(feed), &upstream, governor.addr());
    wait_for_feed(&envoy);
    let tickets = admit(&envoy, 5);

    let out = huntgatectl(
        &grpc,
        &tokens,
        &["set", HUNT, "--max-hunters", "5", "--reason", "e2e spike"],
    );
    assert!(out.contains("limit 5 = floor(max_hunters 5"), "{out}");
    let mut workers = Workers::open(&envoy);
    workers.wait_for_limit(5, BOUND);
    assert_sessions_pass(&envoy, &tickets);

    // An override replaces the previous one whole: keep max 5, pin 0.4 → limit 2.
    let out = huntgatectl(
        &grpc,
        &tokens,
        &[
            "set",
            HUNT,
            "--max-hunters",
            "5",
            "--pin",
            "0.4",
            "--reason",
            "e2e deeper cut",
        ],
    );
    assert!(
        out.contains("limit 2 = floor(max_hunters 5 × ratio 0.4)"),
        "{out}"
    );
    workers.wait_for_limit(2, BOUND);
    assert_sessions_pass(&envoy, &tickets);

    huntgatectl(
        &grpc,
        &tokens,
        &["set", HUNT, "--mode", "open", "--reason", "e2e open"],
    );
    poll_until("the hunt to admit again once opened", BOUND, || {
        workers.limits().contains(&None).then_some(())
    });
    let audit = huntgatectl(&grpc, &tokens, &["audit", "--hunt", HUNT]);
    assert_eq!(audit.matches("set_override").count(), 3, "{audit}");
}

/// The document the faulty governor serves while healthy: the hunt at ratio 0.5 (limit 5).
fn half_open_document() -> Value {
    json!({
        "version": 7,
        "generated_at_ms": 1,
        "ttl_s": 10,
        "default_ratio": 1.0,
        "hunts": {HUNT: {"max_hunters": MAX_HUNTERS, "ratio": 0.5, "limit": 5, "reason": "pinned"}},
    })
}

/// One fault of the governor, end to end: while it lasts no request waits on it (every
/// probe is answered), the last good document stays in force, the filter's metrics show
/// the failed fetches, ticket holders keep playing; after `max_stale_s` the fallback
/// applies; once the governor is healthy again its limit returns.
fn a_governor_fault_holds_no_request_and_heals(fault: Fault) {
    const MAX_STALE_S: u64 = 3;
    let upstream = Upstream::start();
    let governor = FaultyGovernor::start(half_open_document());
    let feed = json!({
        "poll_interval_ms": 200,
        "long_poll_s": 0,
        "timeout_ms": 300,
        "max_stale_s": MAX_STALE_S,
        "on_stale": {"ratio": 0.2},
    });
    let envoy = Envoy::start_with_governor(&plugin_config(feed), &upstream, governor.addr());
    wait_for_feed(&envoy);
    let tickets = admit(&envoy, 5);
    let mut workers = Workers::open(&envoy);
    assert_eq!(workers.limits(), vec![Some(5); CONNECTIONS]);

    governor.set(fault.clone());
    let failed_before = envoy
        .metrics()
        .get(GOVERNOR_FETCH_FAILED, &[])
        .unwrap_or(0.0);
    poll_until("failed fetches and governor_up 0", BOUND, || {
        let m = envoy.metrics();
        (m.get(GOVERNOR_FETCH_FAILED, &[]).unwrap_or(0.0) >= failed_before + 2.0
            && m.get(GOVERNOR_UP, &[]) == Some(0.0))
        .then_some(())
    });
    assert_sessions_pass(&envoy, &tickets);
    // Every probe below is answered (a request waiting on the governor would hit the
    // client's timeout); the fallback comes once the document is max_stale_s old.
    workers.wait_for_limit(2, BOUND);
    assert_sessions_pass(&envoy, &tickets);
    assert!(
        !envoy.log().contains("panicked"),
        "{fault:?}: a worker panicked:\n{}",
        envoy.log()
    );

    governor.set(Fault::Healthy);
    workers.wait_for_limit(5, BOUND);
    poll_until("governor_up 1 again", BOUND, || {
        (envoy.metrics().get(GOVERNOR_UP, &[]) == Some(1.0)).then_some(())
    });
    assert_sessions_pass(&envoy, &tickets);
    assert!(governor.requests() > 3);
}

#[test]
fn a_hung_governor_that_accepts_and_never_answers_holds_no_request() {
    a_governor_fault_holds_no_request_and_heals(Fault::Hung);
}

#[test]
fn a_governor_answering_after_the_timeout_counts_as_down() {
    a_governor_fault_holds_no_request_and_heals(Fault::Slow(Duration::from_millis(1500)));
}

#[test]
fn a_governor_answering_garbage_or_absurd_values_is_refused_and_the_last_document_stays() {
    a_governor_fault_holds_no_request_and_heals(Fault::Garbage);
    let mut absurd = half_open_document();
    absurd["hunts"][HUNT]["ratio"] = json!(7.5);
    absurd["hunts"][HUNT]["max_hunters"] = json!(4_000_000_000u64);
    absurd["default_ratio"] = json!(-3);
    a_governor_fault_holds_no_request_and_heals(Fault::Absurd(absurd));
}
