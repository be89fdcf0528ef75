//! A per-worker cache of tickets whose MAC was verified, so a hunter's repeated
//! requests skip the HMAC and base64 decoding (the hot path's largest cost).
//!
//! Only what the MAC proves is cached (hunt, hunter, issue time, and the
//! hunter's store key, so the hot path hashes nothing); expiry is checked on
//! every request, and whether the session has ended by the engine. A worker's cache lives as long as its configuration (a new
//! configuration, e.g. a rotated secret, starts with an empty cache).

use hashbrown::HashMap;

use crate::store::hunter_key;
use crate::ticket::{check_expiry, TicketClaims, TicketError, TicketKeys};

/// Entries kept before the cache is emptied (bounds memory to a few MB per worker).
pub const MAX_ENTRIES: usize = 16_384;

/// What a verified ticket was issued for.
#[derive(Debug, Clone)]
struct Verified {
    hunt: String,
    claims: TicketClaims,
    issued_ms: u64,
    key: u64,
}

/// A verified ticket, as [`TicketCache::verify_session`] returns it.
#[derive(Debug, Clone, Copy)]
pub struct VerifiedTicket<'a> {
    /// What the ticket says.
    pub claims: &'a TicketClaims,
    /// When it was issued (unix ms; 0 for a version-1 ticket).
    pub issued_ms: u64,
    /// The hunter's store key in the hunt ([`crate::store::hunter_key`]).
    pub key: u64,
}

/// Verified tickets of one worker.
#[derive(Debug, Default)]
pub struct TicketCache {
    verified: HashMap<String, Verified>,
}

impl TicketCache {
    /// [`TicketKeys::verify`], answered from the cache when this ticket was verified before.
    pub fn verify(
        &mut self,
        keys: &TicketKeys,
        ticket: &str,
        hunt: &str,
        now_ms: u64,
        ttl_s: u32,
    ) -> Result<&TicketClaims, TicketError> {
        self.verify_session(keys, ticket, hunt, now_ms, ttl_s)
            .map(|verified| verified.claims)
    }

    /// [`TicketCache::verify`], with the ticket's issue time and the hunter's store key.
    pub fn verify_session(
        &mut self,
        keys: &TicketKeys,
        ticket: &str,
        hunt: &str,
        now_ms: u64,
        ttl_s: u32,
    ) -> Result<VerifiedTicket<'_>, TicketError> {
        if !self.verified.contains_key(ticket) {
            let (claims, issued_ms) = keys.verify_issued(ticket, hunt, now_ms, ttl_s)?;
            if self.verified.len() >= MAX_ENTRIES {
                self.verified.clear();
            }
            self.verified.insert(
                ticket.to_string(),
                Verified {
                    hunt: hunt.to_string(),
                    key: hunter_key(hunt, &claims.hunter),
                    claims,
                    issued_ms,
                },
            );
        }
        let entry = self.verified.get(ticket).ok_or(TicketError::Malformed)?;
        if entry.hunt != hunt {
            return Err(TicketError::OtherHunt);
        }
        check_expiry(entry.claims.expires_s, now_ms, ttl_s)?;
        Ok(VerifiedTicket {
            claims: &entry.claims,
            issued_ms: entry.issued_ms,
            key: entry.key,
        })
    }

    /// Cached tickets.
    pub fn len(&self) -> usize {
        self.verified.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.verified.is_empty()
    }
}
