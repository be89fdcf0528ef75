//! Ticket parser and verifier (`huntgate_core::ticket`).
//!
//! Checks, for arbitrary keys, claims, clock and a hostile ticket string:
//! - `verify` never panics, on the hostile string or on any mutation of a real ticket;
//! - a ticket issued for (hunt, hunter, expiry) verifies back to exactly those
//!   claims while it is valid, and only for its own hunt;
//! - no other string verifies: a ticket differing from the issued one in any
//!   byte is refused (a forged or bit-flipped ticket never passes), so the
//!   hostile string verifies only if it *is* a ticket those keys issue;
//! - a rotated-out key no longer verifies tickets it signed; a key still in
//!   the list does.
#![no_main]

use arbitrary::Arbitrary;
use huntgate_core::ticket::{check_expiry, TicketError, TicketKeys, MAX_TICKET_LEN};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    /// Secrets of the verifying key list (the first signs).
    secrets: Vec<String>,
    hunt: String,
    hunter: String,
    expires_s: u32,
    now_ms: u64,
    ttl_s: u32,
    /// A hostile ticket string.
    ticket: String,
    /// Where and how to mutate the issued ticket.
    flip_at: usize,
    flip_with: u8,
}

fuzz_target!(|input: Input| {
    let Ok(keys) = TicketKeys::new(&input.secrets) else {
        assert!(input.secrets.is_empty(), "HMAC takes keys of any length");
        return;
    };
    // The hostile string: never a panic; whatever verifies is what these keys issue.
    if let Ok(claims) = keys.verify(&input.ticket, &input.hunt, input.now_ms, input.ttl_s) {
        assert!(input.ticket.len() <= MAX_TICKET_LEN);
        assert!(check_expiry(claims.expires_s, input.now_ms, input.ttl_s).is_ok());
        // Verifying takes a MAC of the text as written; the same claims issued
        // again may spell the expiry differently (`007`), but must verify too.
        let again = keys.issue(&input.hunt, &claims.hunter, claims.expires_s);
        assert_eq!(
            keys.verify(&again, &input.hunt, input.now_ms, input.ttl_s),
            Ok(claims)
        );
    }

    // A real ticket round-trips while valid.
    let ticket = keys.issue(&input.hunt, &input.hunter, input.expires_s);
    let valid = check_expiry(input.expires_s, input.now_ms, input.ttl_s);
    let verdict = keys.verify(&ticket, &input.hunt, input.now_ms, input.ttl_s);
    if ticket.len() > MAX_TICKET_LEN {
        assert_eq!(verdict, Err(TicketError::Malformed));
        return;
    }
    match valid {
        Ok(()) => {
            let claims = verdict.unwrap_or_else(|e| panic!("issued ticket refused: {e:?}"));
            assert_eq!(claims.hunter, input.hunter);
            assert_eq!(claims.expires_s, input.expires_s);
        }
        Err(e) => assert_eq!(verdict, Err(e)),
    }

    // Only for its own hunt (ids are compared as given: callers pass canonical ids).
    let other_hunt = format!("{}x", input.hunt);
    let elsewhere = keys.verify(&ticket, &other_hunt, input.now_ms, input.ttl_s);
    assert!(
        elsewhere.is_err(),
        "ticket of {:?} verified for {other_hunt:?}",
        input.hunt
    );

    // Any one-byte change is refused.
    let mut bytes = ticket.clone().into_bytes();
    if !bytes.is_empty() {
        let at = input.flip_at % bytes.len();
        if let Some(b) = bytes.get_mut(at) {
            *b ^= input.flip_with.max(1);
        }
        if let Ok(mutated) = String::from_utf8(bytes) {
            assert_ne!(mutated, ticket);
            let verdict = keys.verify(&mutated, &input.hunt, input.now_ms, input.ttl_s);
            assert!(
                verdict.is_err(),
                "mutated ticket {mutated:?} verified: {verdict:?}"
            );
        }
    }
    // Truncations are refused.
    for cut in [1, 2, ticket.len() / 2] {
        if let Some(short) = ticket.get(..ticket.len().saturating_sub(cut)) {
            assert!(keys
                .verify(short, &input.hunt, input.now_ms, input.ttl_s)
                .is_err());
        }
    }

    // Rotation: a new key first, the old one kept, verifies old tickets; the old
    // one dropped, they are refused.
    if valid.is_ok() {
        let Some(signer) = input.secrets.first() else {
            return;
        };
        let fresh = format!("{signer}-rotated");
        let rotated = TicketKeys::new(&[fresh.clone(), signer.clone()]);
        let dropped = TicketKeys::new(&[fresh]);
        if let (Ok(rotated), Ok(dropped)) = (rotated, dropped) {
            assert!(rotated
                .verify(&ticket, &input.hunt, input.now_ms, input.ttl_s)
                .is_ok());
            assert_eq!(
                dropped.verify(&ticket, &input.hunt, input.now_ms, input.ttl_s),
                Err(TicketError::BadSignature)
            );
        }
    }
});
