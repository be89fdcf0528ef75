//! Tickets: signing, verification, rotation, expiry and renewal.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use huntgate_core::ticket::{needs_renewal, session_expiry_s, TicketError, TicketKeys};

const NOW_MS: u64 = 1_800_000_000_000;
const TTL: u32 = 60;

fn keys(secrets: &[&str]) -> TicketKeys {
    TicketKeys::new(&secrets.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
}

#[test]
fn issued_ticket_verifies_for_its_hunt_and_names_its_hunter() {
    let k = keys(&["secret-number-one"]);
    let exp = session_expiry_s(NOW_MS, TTL);
    let t = k.issue("h1", "alice@example", exp);
    let claims = k.verify(&t, "h1", NOW_MS, TTL).unwrap();
    assert_eq!(claims.hunter, "alice@example");
    assert_eq!(claims.expires_s, exp);
}

#[test]
fn any_tampering_breaks_the_signature() {
    let k = keys(&["secret-number-one"]);
    let t = k.issue("h1", "alice", session_expiry_s(NOW_MS, TTL));
    let forged_hunter = t.replace(".YWxpY2U.", ".Ym9i.");
    assert_ne!(forged_hunter, t);
    assert_eq!(
        k.verify(&forged_hunter, "h1", NOW_MS, TTL),
        Err(TicketError::BadSignature)
    );
    let parts: Vec<&str> = t.split('.').collect();
    let later = format!(
        "{}.{}.{}.{}.{}",
        parts[0],
        parts[1],
        parts[2],
        parts[3].parse::<u32>().unwrap() + 10,
        parts[4]
    );
    assert_eq!(
        k.verify(&later, "h1", NOW_MS, TTL),
        Err(TicketError::BadSignature)
    );
    let other_key =
        keys(&["secret-number-two"]).issue("h1", "alice", session_expiry_s(NOW_MS, TTL));
    assert_eq!(
        k.verify(&other_key, "h1", NOW_MS, TTL),
        Err(TicketError::BadSignature)
    );
    for junk in [
        "",
        "x",
        "1.a.b.c",
        "2.aDE.YQ.1.AAAAAAAAAAAAAAAAAAAAAA",
        &"9".repeat(600),
    ] {
        assert!(k.verify(junk, "h1", NOW_MS, TTL).is_err(), "{junk}");
    }
}

#[test]
fn a_ticket_is_only_good_for_its_hunt() {
    let k = keys(&["secret-number-one"]);
    let t = k.issue("h1", "alice", session_expiry_s(NOW_MS, TTL));
    assert_eq!(k.verify(&t, "h2", NOW_MS, TTL), Err(TicketError::OtherHunt));
}

#[test]
fn tickets_expire_and_cannot_claim_more_than_the_ttl() {
    let k = keys(&["secret-number-one"]);
    let exp = session_expiry_s(NOW_MS, TTL);
    let t = k.issue("h1", "alice", exp);
    let at_expiry = u64::from(exp) * 1000;
    assert!(k.verify(&t, "h1", at_expiry - 1, TTL).is_ok());
    assert_eq!(
        k.verify(&t, "h1", at_expiry, TTL),
        Err(TicketError::Expired)
    );
    // After the TTL is lowered to 10 s, a 60 s ticket is no longer honoured.
    assert_eq!(k.verify(&t, "h1", NOW_MS, 10), Err(TicketError::Expired));
}

#[test]
fn rotation_first_secret_signs_all_verify() {
    let old = keys(&["the-old-secret-key"]);
    let rotated = keys(&["the-new-secret-key", "the-old-secret-key"]);
    let exp = session_expiry_s(NOW_MS, TTL);
    let from_old = old.issue("h1", "a", exp);
    assert!(rotated.verify(&from_old, "h1", NOW_MS, TTL).is_ok());
    let from_new = rotated.issue("h1", "a", exp);
    assert_eq!(
        old.verify(&from_new, "h1", NOW_MS, TTL),
        Err(TicketError::BadSignature)
    );
}

#[test]
fn renewal_starts_past_half_life() {
    let exp = session_expiry_s(NOW_MS, TTL);
    assert!(!needs_renewal(exp, NOW_MS, TTL));
    assert!(!needs_renewal(exp, NOW_MS + 29_000, TTL));
    assert!(needs_renewal(exp, NOW_MS + 31_000, TTL));
}
