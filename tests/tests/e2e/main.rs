//! End-to-end tests: the huntgate filter in a real Envoy.
//!
//! One test binary, so every test runs in parallel with the others; each
//! test starts its own echo upstream and Envoy (own ports, own shared data).
//! Needs `$HUNTGATE_ENVOY` (or `envoy` on PATH), the built filter
//! (`make wasm`) and the governor binary (`$HUNTGATE_GOVERNOR`, else
//! target/debug/huntgate-governor); `make e2e` provides all three.

mod admission;
mod bypass;
mod catalog;
mod config;
mod fleet;
mod fleet_replicas;
mod governor;
mod host_calls;
mod hostile;
mod install;
mod istio;
mod metrics;
mod packaging;
mod paths;
mod reload;
mod requests;
mod session_end;
mod sessions;
mod shadow;
mod tickets;
mod waiting_room;

use huntgate_e2e::plugin::{DECISION_HEADER, HUNTER_HEADER, RETRY_AFTER_S, TICKET_HEADER};
use huntgate_e2e::{Client, Connection, Response};

/// A hunter id, distinct per `i`.
pub fn hunter(i: usize) -> String {
    format!("hunter-{i:04}")
}

/// The path a hunter uses to join `hunt`.
pub fn join_path(hunt: &str) -> String {
    format!("/hunts/{hunt}/join")
}

/// A join of `hunt` by `hunter` without a ticket.
pub fn join(client: &Client, hunt: &str, hunter: &str) -> Response {
    client.get(&join_path(hunt), &[(HUNTER_HEADER, hunter)])
}

/// [`join`] on one connection (so on one worker).
pub fn join_on(connection: &mut Connection, hunt: &str, hunter: &str) -> Response {
    connection.get(&join_path(hunt), &[(HUNTER_HEADER, hunter)])
}

/// Asserts that `hunter`'s request to `hunt` with `ticket` passes as a
/// session on `client` (e.g. another proxy than the one that admitted it).
pub fn assert_session(client: &Client, hunt: &str, hunter: &str, ticket: &str) {
    let response = client.get(
        &format!("/hunts/{hunt}/move"),
        &[(HUNTER_HEADER, hunter), (TICKET_HEADER, ticket)],
    );
    assert_eq!(
        response.decision().as_deref(),
        Some("session"),
        "{}",
        response.summary()
    );
}

/// A request to `hunt` by `hunter` presenting `ticket` in the ticket header.
pub fn with_ticket(client: &Client, hunt: &str, hunter: &str, ticket: &str) -> Response {
    client.get(
        &join_path(hunt),
        &[(HUNTER_HEADER, hunter), (TICKET_HEADER, ticket)],
    )
}

/// A request to `hunt` by `hunter` presenting `ticket` in the hunt's cookie.
pub fn with_cookie(client: &Client, hunt: &str, hunter: &str, ticket: &str) -> Response {
    let cookie = format!("theme=dark; huntgate.{hunt}={ticket}");
    client.get(
        &join_path(hunt),
        &[(HUNTER_HEADER, hunter), ("cookie", &cookie)],
    )
}

/// Asserts that `response` reached the upstream with `decision`.
pub fn assert_passed(response: &Response, decision: &str) {
    assert_eq!(
        response.status,
        200,
        "expected 200 from upstream: {}",
        response.summary()
    );
    assert!(
        response.from_upstream(),
        "not the upstream's response: {}",
        response.summary()
    );
    assert_eq!(
        response.decision().as_deref(),
        Some(decision),
        "upstream saw another {DECISION_HEADER}: {}",
        response.summary()
    );
}

/// Asserts a new admission to `hunt` with a ticket and its cookie (session
/// TTL `ttl_s`); returns the ticket.
pub fn assert_admitted(response: &Response, hunt: &str, ttl_s: u64) -> String {
    assert_passed(response, "admitted");
    let ticket = response
        .ticket()
        .unwrap_or_else(|| panic!("admitted without {TICKET_HEADER}: {}", response.summary()));
    assert!(!ticket.is_empty(), "empty ticket: {}", response.summary());
    let expected =
        format!("huntgate.{hunt}={ticket}; Path=/; Max-Age={ttl_s}; HttpOnly; SameSite=Lax");
    assert!(
        response
            .header_all("set-cookie")
            .contains(&expected.as_str()),
        "expected set-cookie {expected:?}: {}",
        response.summary()
    );
    ticket
}

/// Asserts the hunt-full rejection of the contract.
pub fn assert_hunt_full(response: &Response, hunt: &str, limit: u64, active: u64) {
    assert_eq!(response.status, 429, "expected 429: {}", response.summary());
    assert!(
        !response.from_upstream(),
        "a rejection reached upstream: {}",
        response.summary()
    );
    assert_eq!(
        response.header("retry-after"),
        Some(RETRY_AFTER_S.to_string().as_str()),
        "retry-after: {}",
        response.summary()
    );
    assert!(
        response.ticket().is_none(),
        "a rejection carries a ticket: {}",
        response.summary()
    );
    let body = response.json();
    assert_eq!(body["error"], "hunt_full", "{}", response.summary());
    assert_eq!(body["hunt"], hunt, "{}", response.summary());
    assert_eq!(body["limit"], limit, "{}", response.summary());
    assert_eq!(body["active"], active, "{}", response.summary());
    assert_eq!(
        body["retry_after_s"],
        RETRY_AFTER_S,
        "{}",
        response.summary()
    );
}

/// Asserts a 400 with the contract's JSON body and `reason`.
pub fn assert_bad_request(response: &Response, reason: &str) {
    assert_eq!(response.status, 400, "expected 400: {}", response.summary());
    assert!(
        !response.from_upstream(),
        "a bad request reached upstream: {}",
        response.summary()
    );
    let body = response.json();
    assert_eq!(body["error"], "bad_request", "{}", response.summary());
    assert_eq!(body["reason"], reason, "{}", response.summary());
}
