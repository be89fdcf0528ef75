//! The per-worker verified-ticket cache answers exactly like `TicketKeys::verify`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use huntgate_core::ticket::{TicketError, TicketKeys};
use huntgate_core::ticket_cache::{TicketCache, MAX_ENTRIES};
fn make_keys(secret: &str) -> TicketKeys {
    TicketKeys::new(&[secret.to_string()]).unwrap()
}

const NOW_MS: u64 = 1_800_000_000_000;
const TTL: u32 = 300;

#[test]
fn cached_ticket_answers_like_verify() {
    let keys = make_keys("0123456789abcdef0123");
    let ticket = keys.issue("h1", "alice", (NOW_MS / 1000) as u32 + 100);
    let mut cache = TicketCache::default();
    let first = cache
        .verify(&keys, &ticket, "h1", NOW_MS, TTL)
        .unwrap()
        .clone();
    assert_eq!(first, keys.verify(&ticket, "h1", NOW_MS, TTL).unwrap());
    assert_eq!(cache.len(), 1);
    let again = cache.verify(&keys, &ticket, "h1", NOW_MS, TTL).unwrap();
    assert_eq!(again, &first);
}

#[test]
fn cached_ticket_still_expires_and_stays_bound_to_its_hunt() {
    let keys = make_keys("0123456789abcdef0123");
    let expires = (NOW_MS / 1000) as u32 + 100;
    let ticket = keys.issue("h1", "alice", expires);
    let mut cache = TicketCache::default();
    assert!(cache.verify(&keys, &ticket, "h1", NOW_MS, TTL).is_ok());
    assert_eq!(
        cache.verify(&keys, &ticket, "h2", NOW_MS, TTL).unwrap_err(),
        TicketError::OtherHunt
    );
    let later = u64::from(expires) * 1000;
    assert_eq!(
        cache.verify(&keys, &ticket, "h1", later, TTL).unwrap_err(),
        TicketError::Expired
    );
    // A lowered TTL refuses a ticket that claims to live longer.
    assert_eq!(
        cache.verify(&keys, &ticket, "h1", NOW_MS, 10).unwrap_err(),
        TicketError::Expired
    );
}

#[test]
fn forged_tickets_are_never_cached() {
    let keys = make_keys("0123456789abcdef0123");
    let forged =
        make_keys("another-secret-456789").issue("h1", "alice", (NOW_MS / 1000) as u32 + 100);
    let mut cache = TicketCache::default();
    assert_eq!(
        cache.verify(&keys, &forged, "h1", NOW_MS, TTL).unwrap_err(),
        TicketError::BadSignature
    );
    assert!(cache.is_empty());
}

#[test]
fn the_cache_is_bounded() {
    let keys = make_keys("0123456789abcdef0123");
    let mut cache = TicketCache::default();
    for i in 0..MAX_ENTRIES + 1 {
        let ticket = keys.issue("h1", &format!("u{i}"), (NOW_MS / 1000) as u32 + 100);
        assert!(cache.verify(&keys, &ticket, "h1", NOW_MS, TTL).is_ok());
    }
    assert!(cache.len() <= MAX_ENTRIES);
}
