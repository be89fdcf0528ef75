//! Tickets that must not let anyone in: forged, expired, another hunt's,
//! another hunter's. Each counts as no ticket, so with the hunt full it is
//! a 429.

use std::time::Duration;

use huntgate_e2e::plugin;
use huntgate_e2e::poll::try_poll_until;
use huntgate_e2e::{Envoy, Upstream};
use serde_json::json;

use crate::{assert_admitted, assert_hunt_full, assert_passed, join, with_cookie, with_ticket};

/// `ticket` with one character in the middle changed.
fn tampered(ticket: &str) -> String {
    let mut chars: Vec<char> = ticket.chars().collect();
    let middle = chars.len() / 2;
    if let Some(c) = chars.get_mut(middle) {
        *c = if *c == 'A' { 'B' } else { 'A' };
    }
    chars.into_iter().collect()
}

#[test]
fn forged_foreign_and_stolen_tickets_count_as_no_ticket() {
    let upstream = Upstream::start();
    let config = plugin::config(json!({"max_hunters": 1, "hunts": {"other": {"max_hunters": 5}}}));
    let envoy = Envoy::start(&config, &upstream);
    let client = envoy.client();
    let alice = assert_admitted(&join(&client, "vault", "alice"), "vault", 300);
    let carol_other = assert_admitted(&join(&client, "other", "carol"), "other", 300);
    // The real ticket works (so the rejections below are about the ticket).
    assert_passed(&with_ticket(&client, "vault", "alice", &alice), "session");

    // Forged: alice's ticket tampered, presented by alice's rival bob.
    let forged = tampered(&alice);
    assert_ne!(forged, alice);
    assert_hunt_full(
        &with_ticket(&client, "vault", "bob", &forged),
        "vault",
        1,
        1,
    );
    assert_hunt_full(
        &with_cookie(&client, "vault", "bob", &forged),
        "vault",
        1,
        1,
    );
    assert_hunt_full(
        &with_ticket(&client, "vault", "bob", "not-a-ticket"),
        "vault",
        1,
        1,
    );
    // Another hunter's ticket: bob presents alice's.
    assert_hunt_full(&with_ticket(&client, "vault", "bob", &alice), "vault", 1, 1);
    assert_hunt_full(&with_cookie(&client, "vault", "bob", &alice), "vault", 1, 1);
    // Another hunt's ticket: carol's ticket for `other` at `vault`.
    assert_hunt_full(
        &with_ticket(&client, "vault", "carol", &carol_other),
        "vault",
        1,
        1,
    );
    assert_hunt_full(
        &with_cookie(&client, "vault", "carol", &carol_other),
        "vault",
        1,
        1,
    );
    // A forged ticket for a hunter who does hold a session is no session
    // renewal either, but alice's live session still lets her re-join.
    assert_passed(&with_ticket(&client, "vault", "alice", &forged), "admitted");
}

#[test]
fn expired_ticket_counts_as_no_ticket() {
    const TTL_S: u64 = 2;
    let upstream = Upstream::start();
    let config = plugin::config(json!({"max_hunters": 1, "session_ttl_s": TTL_S}));
    let envoy = Envoy::start(&config, &upstream);
    let client = envoy.client();
    let alice = assert_admitted(&join(&client, "brief", "alice"), "brief", TTL_S);
    // alice goes silent; once her session expired bob takes the slot.
    let bob = try_poll_until(Duration::from_secs(10), Duration::from_millis(200), || {
        let response = join(&client, "brief", "bob");
        (response.status == 200).then_some(response)
    })
    .expect("bob admitted once alice's session expired");
    assert_admitted(&bob, "brief", TTL_S);
    // alice's ticket is past its TTL now: she is a newcomer to a full hunt.
    assert_hunt_full(
        &with_ticket(&client, "brief", "alice", &alice),
        "brief",
        1,
        1,
    );
    assert_hunt_full(
        &with_cookie(&client, "brief", "alice", &alice),
        "brief",
        1,
        1,
    );
}
