//! Tickets that must not let anyone in: forged, expired, another hunt's,
//! another hunter's. Each counts as no ticket, so with the hunt full it is
//! a 429.

use std::time::Duration;

use huntgate_e2e::h2_get;
use huntgate_e2e::plugin::{self, HUNTER_HEADER, TICKET_HEADER};
use huntgate_e2e::poll::try_poll_until;
use huntgate_e2e::{Envoy, Upstream};
use serde_json::json;

use crate::{
    assert_admitted, assert_hunt_full, assert_passed, join, join_path, with_cookie, with_ticket,
};

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

/// The shared table of ticket attacks (`core/tests/cases/tickets.tsv`).
const TICKET_CASES: &str = include_str!("../../../core/tests/cases/tickets.tsv");

/// Header names the shared ticket-attack code expects.
const HUNTER: &str = HUNTER_HEADER;
const TICKET: &str = TICKET_HEADER;

// The table's ticket changes and ways of presenting, one copy for both suites.
include!("../../../core/tests/cases/ticket_attacks.rs");

#[test]
fn no_ticket_attack_of_the_shared_table_gets_in_or_moves_the_count() {
    let upstream = Upstream::start();
    let config = plugin::config(json!({"max_hunters": 1, "hunts": {"other": {"max_hunters": 5}}}));
    let envoy = Envoy::start(&config, &upstream);
    let client = envoy.client();
    let alice = assert_admitted(&join(&client, "vault", "alice"), "vault", 300);
    let carol_other = assert_admitted(&join(&client, "other", "carol"), "other", 300);
    // alice's ticket for vault from a proxy whose only secret was rotated out here.
    let mut old = config.clone();
    old["ticket_secrets"] = json!(["a-rotated-out-secret-0123456789"]);
    let retired = Envoy::start(&old, &upstream);
    let rotated_out = assert_admitted(&join(&retired.client(), "vault", "alice"), "vault", 300);
    drop(retired);

    let attacks = attacks(TICKET_CASES, &alice, &carol_other, &rotated_out);
    for Attack {
        case,
        headers,
        expect,
    } in &attacks
    {
        let refs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let h1 = client.get(&join_path("vault"), &refs);
        let h2 = h2_get(envoy.addr(), &join_path("vault"), &refs)
            .unwrap_or_else(|| panic!("{case}: no HTTP/2 answer"));
        for (protocol, response) in [("HTTP/1.1", h1), ("HTTP/2", h2)] {
            match *expect {
                "full" => {
                    assert_eq!(
                        response.status,
                        429,
                        "{case} over {protocol}: {}",
                        response.summary()
                    );
                    assert!(
                        !response.from_upstream(),
                        "{case} over {protocol} reached the hunt"
                    );
                    let body = response.json();
                    assert_eq!(
                        (body["error"].as_str(), body["active"].as_u64()),
                        (Some("hunt_full"), Some(1)),
                        "{case} over {protocol}: the count moved"
                    );
                }
                "session" => assert_passed(&response, "session"),
                other => panic!("unknown expect `{other}` in tickets.tsv"),
            }
        }
    }
    assert!(attacks.len() >= 20, "only {} cases read", attacks.len());
    assert_hunt_full(&join(&client, "vault", "after-every-attack"), "vault", 1, 1);
    assert_passed(&with_ticket(&client, "vault", "alice", &alice), "session");
}
