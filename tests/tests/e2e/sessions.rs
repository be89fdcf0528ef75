//! Sessions: expiry of silent hunters, re-joins, anonymous hunters.

use std::time::{Duration, Instant};

use huntgate_e2e::plugin;
use huntgate_e2e::poll::try_poll_until;
use huntgate_e2e::{Envoy, Upstream};
use serde_json::json;

use crate::{assert_admitted, assert_hunt_full, assert_passed, join, join_path};

const TTL_S: u64 = 2;

#[test]
fn silent_hunters_slot_frees_after_session_ttl() {
    let upstream = Upstream::start();
    let config = plugin::config(json!({"max_hunters": 1, "session_ttl_s": TTL_S}));
    let envoy = Envoy::start(&config, &upstream);
    let client = envoy.client();
    assert_admitted(&join(&client, "ttl", "alice"), "ttl", TTL_S);
    let admitted_at = Instant::now();
    assert_hunt_full(&join(&client, "ttl", "bob"), "ttl", 1, 1);

    // Expiry plus the sweep tick: bob gets in about TTL + 1 s later.
    let bound = Duration::from_secs(30);
    let admitted = try_poll_until(bound, Duration::from_millis(200), || {
        let response = join(&client, "ttl", "bob");
        (response.status == 200).then_some(response)
    });
    let waited = admitted_at.elapsed();
    let response = admitted
        .unwrap_or_else(|| panic!("bob was not admitted within {bound:?} of alice's last request"));
    assert_admitted(&response, "ttl", TTL_S);
    assert!(
        waited >= Duration::from_secs(TTL_S - 1),
        "alice's slot was freed after {waited:?}, before her {TTL_S} s session could expire"
    );
    // How soon after the TTL (the sweep runs every second) is a benchmark
    // figure; here `bound` only keeps the test from waiting forever.
    eprintln!("alice's slot freed {waited:?} after her last request (TTL {TTL_S} s)");
}

#[test]
fn rejoining_without_ticket_does_not_take_a_second_slot() {
    let upstream = Upstream::start();
    let envoy = Envoy::start(&plugin::config(json!({"max_hunters": 1})), &upstream);
    let client = envoy.client();
    assert_admitted(&join(&client, "again", "alice"), "again", 300);
    // alice lost her ticket (new device): still let through, same slot.
    assert_passed(&join(&client, "again", "alice"), "admitted");
    assert_hunt_full(&join(&client, "again", "bob"), "again", 1, 1);
}

#[test]
fn anonymous_hunters_get_minted_sessions() {
    let upstream = Upstream::start();
    let config = plugin::config(json!({"max_hunters": 2, "hunter": {"anonymous": true}}));
    let envoy = Envoy::start(&config, &upstream);
    let client = envoy.client();
    let first = assert_admitted(&client.get(&join_path("anon"), &[]), "anon", 300);
    let second = assert_admitted(&client.get(&join_path("anon"), &[]), "anon", 300);
    assert_ne!(first, second, "two anonymous hunters got the same ticket");
    assert_hunt_full(&client.get(&join_path("anon"), &[]), "anon", 2, 2);
    // The ticket alone identifies an anonymous hunter (no hunter header).
    let response = client.get(
        &join_path("anon"),
        &[(plugin::TICKET_HEADER, first.as_str())],
    );
    assert_passed(&response, "session");
}
