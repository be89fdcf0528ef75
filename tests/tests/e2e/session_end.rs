//! Ending a session before its TTL, in real Envoy (`--concurrency 2`): by the
//! upstream's response header and by the client's leave request. The slot frees
//! at once (the session TTL is 300 s, so the next joiner gets in only because of
//! the end), the header never reaches the client, and the ended ticket no longer
//! passes on any worker: it counts as no ticket, i.e. as a new join. With fleet
//! leases the end travels to the other proxies in the lease exchange, and there too
//! the ended ticket no longer passes uncounted.

use std::time::Duration;

use huntgate_e2e::metrics::SESSION_ENDED;
use huntgate_e2e::plugin::{self, HUNTER_HEADER, TICKET_HEADER};
use huntgate_e2e::poll::poll_until;
use huntgate_e2e::upstream::RESPOND_HEADER;
use huntgate_e2e::{Connection, Envoy, Governor, Metrics, Policies, Response, Upstream};
use serde_json::json;

use crate::fleet::{plugin_config, DEFAULTS};
use crate::{assert_admitted, assert_hunt_full, assert_passed, join_on};

/// Connections held open; Envoy spreads them over its workers.
const CONNECTIONS: usize = 8;
/// How long Envoy may take to report the connections or a counter.
const BOUND: Duration = Duration::from_secs(30);
/// The session TTL: far longer than any test, so only an end frees a slot.
const TTL_S: u64 = 300;
/// The end header (`session_end.header`, off unless configured).
const END_HEADER: &str = "x-huntgate-session";

/// Connections on every worker of one Envoy.
struct Workers {
    connections: Vec<Connection>,
}

impl Workers {
    fn open(envoy: &Envoy) -> Self {
        let connections = envoy.connections_on_every_worker(CONNECTIONS, BOUND);
        Self { connections }
    }

    fn first(&mut self) -> &mut Connection {
        &mut self.connections[0]
    }
}

fn play(connection: &mut Connection, hunt: &str, hunter: &str, ticket: Option<&str>) -> Response {
    let mut headers = vec![(HUNTER_HEADER, hunter)];
    if let Some(ticket) = ticket {
        headers.push((TICKET_HEADER, ticket));
    }
    connection.get(&format!("/hunts/{hunt}/move"), &headers)
}

fn leave(connection: &mut Connection, hunt: &str, hunter: &str, ticket: &str) -> Response {
    connection.request(
        "POST",
        &format!("/hunts/{hunt}/leave"),
        &[(HUNTER_HEADER, hunter), (TICKET_HEADER, ticket)],
    )
}

/// Asserts the ticket cookie of `hunt` is cleared by `response`.
fn assert_cookie_cleared(response: &Response, hunt: &str) {
    let cleared = format!("huntgate.{hunt}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax");
    assert!(
        response
            .header_all("set-cookie")
            .contains(&cleared.as_str()),
        "expected set-cookie {cleared:?}: {}",
        response.summary()
    );
}

/// Sends the ended `ticket` of `hunter` on every connection (so on every worker),
/// `rounds` times each, and asserts each is a new join refused with the hunt full.
fn assert_ended_everywhere(workers: &mut Workers, hunt: &str, hunter: &str, ticket: &str) {
    for round in 0..3 {
        for (i, connection) in workers.connections.iter_mut().enumerate() {
            let response = play(connection, hunt, hunter, Some(ticket));
            assert_eq!(
                response.status,
                429,
                "round {round}, connection {i}: the ended ticket passed: {}",
                response.summary()
            );
            assert_hunt_full(&response, hunt, 1, 1);
        }
    }
}

fn wait_for_counter(envoy: &Envoy, name: &str, value: f64) {
    poll_until(&format!("{name} = {value}"), BOUND, || {
        (envoy.metrics().get(name, &[]) == Some(value)).then_some(())
    });
}

#[test]
fn the_upstream_header_ends_the_session_frees_the_slot_and_is_stripped() {
    const HUNT: &str = "end-by-upstream";
    let upstream = Upstream::start();
    let config = plugin::config(json!({
        "max_hunters": 1,
        "session_ttl_s": TTL_S,
        "session_end": {"header": END_HEADER},
    }));
    let envoy = Envoy::start(&config, &upstream);
    let mut workers = Workers::open(&envoy);

    let ticket = assert_admitted(&join_on(workers.first(), HUNT, "alice"), HUNT, TTL_S);
    // Her ticket passes on every worker; the hunt is full for Bob on every worker.
    for connection in &mut workers.connections {
        assert_passed(&play(connection, HUNT, "alice", Some(&ticket)), "session");
        assert_hunt_full(&join_on(connection, HUNT, "bob"), HUNT, 1, 1);
    }

    // The upstream ends Alice's session in its answer to one of her requests.
    let ending = format!("{END_HEADER}: end");
    let response = workers.connections[1].get(
        &format!("/hunts/{HUNT}/finish"),
        &[
            (HUNTER_HEADER, "alice"),
            (TICKET_HEADER, &ticket),
            (RESPOND_HEADER, &ending),
        ],
    );
    assert_passed(&response, "session");
    assert_eq!(
        response.header(END_HEADER),
        None,
        "the end header reached the client: {}",
        response.summary()
    );
    assert_cookie_cleared(&response, HUNT);
    wait_for_counter(&envoy, SESSION_ENDED, 1.0);

    // The slot is free at once (the TTL is 300 s): Bob gets it.
    assert_admitted(&join_on(workers.first(), HUNT, "bob"), HUNT, TTL_S);
    // Alice's ended ticket is a new join on every worker: the hunt is full again.
    assert_ended_everywhere(&mut workers, HUNT, "alice", &ticket);
}

#[test]
fn a_header_other_than_end_is_stripped_and_ends_nothing() {
    const HUNT: &str = "end-other-value";
    let upstream = Upstream::start();
    let config = plugin::config(json!({"max_hunters": 1, "session_end": {"header": END_HEADER}}));
    let envoy = Envoy::start(&config, &upstream);
    let mut workers = Workers::open(&envoy);
    let ticket = assert_admitted(&join_on(workers.first(), HUNT, "alice"), HUNT, TTL_S);
    let keep = format!("{END_HEADER}: keep");
    let response = workers.first().get(
        &format!("/hunts/{HUNT}/move"),
        &[
            (HUNTER_HEADER, "alice"),
            (TICKET_HEADER, &ticket),
            (RESPOND_HEADER, &keep),
        ],
    );
    assert_passed(&response, "session");
    assert_eq!(response.header(END_HEADER), None, "{}", response.summary());
    for connection in &mut workers.connections {
        assert_passed(&play(connection, HUNT, "alice", Some(&ticket)), "session");
        assert_hunt_full(&join_on(connection, HUNT, "bob"), HUNT, 1, 1);
    }
}

#[test]
fn without_session_end_header_the_upstream_header_is_left_alone() {
    const HUNT: &str = "end-header-off";
    let upstream = Upstream::start();
    let config = plugin::config(json!({"max_hunters": 1}));
    let envoy = Envoy::start(&config, &upstream);
    let mut workers = Workers::open(&envoy);
    let ticket = assert_admitted(&join_on(workers.first(), HUNT, "alice"), HUNT, TTL_S);
    let ending = format!("{END_HEADER}: end");
    let response = workers.first().get(
        &format!("/hunts/{HUNT}/finish"),
        &[
            (HUNTER_HEADER, "alice"),
            (TICKET_HEADER, &ticket),
            (RESPOND_HEADER, &ending),
        ],
    );
    assert_passed(&response, "session");
    assert_eq!(
        response.header(END_HEADER),
        Some("end"),
        "{}",
        response.summary()
    );
    for connection in &mut workers.connections {
        assert_passed(&play(connection, HUNT, "alice", Some(&ticket)), "session");
        assert_hunt_full(&join_on(connection, HUNT, "bob"), HUNT, 1, 1);
    }
}

#[test]
fn a_leave_request_ends_the_session_and_frees_the_slot() {
    const HUNT: &str = "end-by-leave";
    let upstream = Upstream::start();
    let config = plugin::config(json!({"max_hunters": 1, "session_ttl_s": TTL_S}));
    let envoy = Envoy::start(&config, &upstream);
    let mut workers = Workers::open(&envoy);

    let ticket = assert_admitted(&join_on(workers.first(), HUNT, "alice"), HUNT, TTL_S);
    for connection in &mut workers.connections {
        assert_passed(&play(connection, HUNT, "alice", Some(&ticket)), "session");
    }
    assert_hunt_full(&join_on(workers.first(), HUNT, "bob"), HUNT, 1, 1);
    let seen_before = upstream.count();

    let response = leave(&mut workers.connections[1], HUNT, "alice", &ticket);
    assert_eq!(response.status, 200, "{}", response.summary());
    assert!(!response.from_upstream(), "{}", response.summary());
    assert_eq!(response.json(), json!({"ended": true, "hunt": HUNT}));
    assert_cookie_cleared(&response, HUNT);
    assert_eq!(
        upstream.count(),
        seen_before,
        "the leave request was forwarded"
    );
    wait_for_counter(&envoy, SESSION_ENDED, 1.0);

    assert_admitted(&join_on(workers.first(), HUNT, "bob"), HUNT, TTL_S);
    assert_ended_everywhere(&mut workers, HUNT, "alice", &ticket);

    // Leaving again with the ended ticket: there is no session to end.
    let again = leave(workers.first(), HUNT, "alice", &ticket);
    assert_eq!(again.status, 403, "{}", again.summary());
    assert_eq!(again.json(), json!({"error": "no_session", "hunt": HUNT}));
}

#[test]
fn an_ended_ticket_rejoins_as_a_counted_new_join_when_there_is_room() {
    const HUNT: &str = "end-rejoin";
    let upstream = Upstream::start();
    let config = plugin::config(json!({"max_hunters": 2, "session_ttl_s": TTL_S}));
    let envoy = Envoy::start(&config, &upstream);
    let mut workers = Workers::open(&envoy);

    let old = assert_admitted(&join_on(workers.first(), HUNT, "alice"), HUNT, TTL_S);
    let response = leave(&mut workers.connections[1], HUNT, "alice", &old);
    assert_eq!(response.status, 200, "{}", response.summary());

    // The old ticket is a new join: admitted with a new ticket, and counted.
    let new = assert_admitted(
        &play(&mut workers.connections[2], HUNT, "alice", Some(&old)),
        HUNT,
        TTL_S,
    );
    assert_ne!(new, old);
    assert_admitted(&join_on(workers.first(), HUNT, "carol"), HUNT, TTL_S);
    assert_hunt_full(&join_on(workers.first(), HUNT, "dave"), HUNT, 2, 2);
    // The new ticket passes everywhere.
    for connection in &mut workers.connections {
        assert_passed(&play(connection, HUNT, "alice", Some(&new)), "session");
    }
}

#[test]
fn with_fleet_leases_an_end_on_one_proxy_stops_the_ticket_passing_uncounted_on_another() {
    const HUNT: &str = "fleet-end";
    let policies = Policies::new(DEFAULTS);
    policies.set_hunt(HUNT, "max_hunters: 10\npin_ratio: 1.0\n");
    let governor = Governor::start(&policies);
    let upstream = Upstream::start();
    let a = Envoy::start_with_governor(&plugin_config("gw-a"), &upstream, governor.addr());
    let b = Envoy::start_with_governor(&plugin_config("gw-b"), &upstream, governor.addr());
    let mut on_a = Connection::open(a.addr());
    let mut on_b = Workers::open(&b);

    // Proxy A admits once its first lease gives it a share.
    let ticket = poll_until("a share on proxy A", BOUND, || {
        let response = join_on(&mut on_a, HUNT, "alice");
        (response.status == 200).then(|| assert_admitted(&response, HUNT, TTL_S))
    });
    // Another proxy honours the ticket uncounted until its renewal (as before).
    assert_passed(&play(on_b.first(), HUNT, "alice", Some(&ticket)), "session");

    let response = leave(&mut on_a, HUNT, "alice", &ticket);
    assert_eq!(response.status, 200, "{}", response.summary());
    let ended = std::time::Instant::now();
    // The end reaches B at its next exchanges (every 250 ms): from then on, on every
    // worker, the ticket is a new join there: counted, with a new ticket.
    poll_until("proxy B to learn the end", BOUND, || {
        (b.metrics().get("huntgate_fleet_ends_recorded", &[]) >= Some(1.0)).then_some(())
    });
    eprintln!(
        "the end reached the other proxy {} ms after the leave (exchanges every 250 ms)",
        ended.elapsed().as_millis()
    );
    for round in 0..3 {
        for (i, connection) in on_b.connections.iter_mut().enumerate() {
            let response = play(connection, HUNT, "alice", Some(&ticket));
            assert_ne!(
                response.decision().as_deref(),
                Some("session"),
                "round {round}, connection {i}: the ended ticket passed uncounted: {}",
                response.summary()
            );
            if response.status == 200 {
                assert_ne!(response.ticket().as_deref(), Some(ticket.as_str()));
                assert!(response.ticket().is_some(), "{}", response.summary());
            } else {
                assert_eq!(response.status, 429, "{}", response.summary());
            }
        }
    }
    let reported = Metrics::parse(&huntgate_e2e::Client::new(governor.addr()).get_ok("/metrics"))
        .get("huntgate_fleet_ends_reported_total", &[]);
    assert!(reported >= Some(1.0), "governor: {reported:?}");
    assert_eq!(a.metrics().get("huntgate_ends_unshared", &[]), Some(0.0));
}
