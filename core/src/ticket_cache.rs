//! A per-worker cache of tickets whose MAC was verified, so a hunter's repeated
//! requests skip the HMAC and base64 decoding (the hot path's largest cost).
//!
//! Only what the MAC proves is cached (hunt and hunter); expiry is checked on
//! every request. A worker's cache lives as long as its configuration (a new
//! configuration, e.g. a rotated secret, starts with an empty cache).

use hashbrown::HashMap;

use crate::ticket::{check_expiry, TicketClaims, TicketError, TicketKeys};

/// Entries kept before the cache is emptied (bounds memory to a few MB per worker).
pub const MAX_ENTRIES: usize = 16_384;

/// What a verified ticket was issued for.
#[derive(Debug, Clone)]
struct Verified {
    hunt: String,
    claims: TicketClaims,
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
        if !self.verified.contains_key(ticket) {
            let claims = keys.verify(ticket, hunt, now_ms, ttl_s)?;
            if self.verified.len() >= MAX_ENTRIES {
                self.verified.clear();
            }
            self.verified.insert(
                ticket.to_string(),
                Verified {
                    hunt: hunt.to_string(),
                    claims,
                },
            );
        }
        let entry = self.verified.get(ticket).ok_or(TicketError::Malformed)?;
        if entry.hunt != hunt {
            return Err(TicketError::OtherHunt);
        }
        check_expiry(entry.claims.expires_s, now_ms, ttl_s)?;
        Ok(&entry.claims)
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
