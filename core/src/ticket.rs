//! Admission tickets: `2.<b64 hunt>.<b64 hunter>.<expires_s>.<issued_ms>.<b64 mac>`,
//! where the MAC is HMAC-SHA256 (first 16 bytes) over everything before the last
//! `.`. `issued_ms` (unix ms) lets a session end revoke every ticket issued for
//! the session up to the end and none issued after (a re-join). Version 1
//! tickets (`1.<hunt>.<hunter>.<expires_s>.<mac>`, no issue time) still verify,
//! as issued at time 0: any end of the hunter's session revokes them.
//!
//! A list of secrets allows rotation: the first signs, every one verifies.
//!
//! Queue tickets (the waiting room's) are `q1.<b64 hunt>.<b64 hunter>.<seq>.<issued_ms>.<b64 mac>`
//! under the same keys: `seq` is the hunter's arrival order in the hunt's queue,
//! `issued_ms` when the place was taken. The version is under the MAC, so a
//! queue ticket never verifies as a session ticket nor the other way round.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Ticket format version written by [`TicketKeys::issue_at`].
const VERSION: &str = "2";
/// The earlier format, without an issue time ([`TicketKeys::issue`]).
const VERSION_1: &str = "1";
/// Queue ticket format version ([`TicketKeys::issue_queue`]).
const QUEUE_VERSION: &str = "q1";
/// Bytes of the HMAC kept in a ticket.
const MAC_BYTES: usize = 16;
/// Longest ticket accepted for parsing.
pub const MAX_TICKET_LEN: usize = 512;

/// Keys that sign and verify tickets. `Debug` never prints them.
#[derive(Clone)]
pub struct TicketKeys {
    macs: Vec<HmacSha256>,
}

impl fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TicketKeys({} keys)", self.macs.len())
    }
}

/// What a valid ticket says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketClaims {
    /// The hunter the ticket was issued to.
    pub hunter: String,
    /// Unix second at which it expires.
    pub expires_s: u32,
}

/// What a valid queue ticket says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueClaims {
    /// The hunter the place belongs to.
    pub hunter: String,
    /// The arrival order of the place in the hunt's queue.
    pub seq: u64,
    /// When the place was taken (unix ms).
    pub issued_ms: u64,
}

/// Why a ticket counts as no ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketError {
    /// Not a ticket of this format.
    Malformed,
    /// Issued for another hunt.
    OtherHunt,
    /// Issued to another hunter than the request's identity.
    OtherHunter,
    /// No key verifies its MAC.
    BadSignature,
    /// Past its expiry, or claiming an expiry beyond the session TTL.
    Expired,
    /// Issued for a session that has ended (by the upstream or a leave request).
    Ended,
}

impl TicketKeys {
    /// Builds keys from secrets; the first signs.
    pub fn new(secrets: &[String]) -> Result<Self, String> {
        let macs = secrets
            .iter()
            .map(|s| HmacSha256::new_from_slice(s.as_bytes()).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        if macs.is_empty() {
            return Err("must list at least one secret".to_string());
        }
        Ok(Self { macs })
    }

    /// Issues a version-1 ticket (no issue time) for `hunter` in `hunt`, valid
    /// until unix second `expires_s`. The filter issues [`TicketKeys::issue_at`]
    /// tickets; these verify as issued at time 0.
    pub fn issue(&self, hunt: &str, hunter: &str, expires_s: u32) -> String {
        let ticket = format!(
            "{VERSION_1}.{}.{}.{expires_s}",
            URL_SAFE_NO_PAD.encode(hunt),
            URL_SAFE_NO_PAD.encode(hunter)
        );
        self.sign(ticket)
    }

    /// Issues a ticket for `hunter` in `hunt` at unix ms `issued_ms`, valid until
    /// unix second `expires_s`.
    pub fn issue_at(&self, hunt: &str, hunter: &str, expires_s: u32, issued_ms: u64) -> String {
        let ticket = format!(
            "{VERSION}.{}.{}.{expires_s}.{issued_ms}",
            URL_SAFE_NO_PAD.encode(hunt),
            URL_SAFE_NO_PAD.encode(hunter)
        );
        self.sign(ticket)
    }

    /// Issues a queue ticket: `hunter`'s place `seq` in `hunt`'s queue, taken at
    /// unix ms `issued_ms`.
    pub fn issue_queue(&self, hunt: &str, hunter: &str, seq: u64, issued_ms: u64) -> String {
        let ticket = format!(
            "{QUEUE_VERSION}.{}.{}.{seq}.{issued_ms}",
            URL_SAFE_NO_PAD.encode(hunt),
            URL_SAFE_NO_PAD.encode(hunter)
        );
        self.sign(ticket)
    }

    /// Verifies a queue ticket for `hunt` at `now_ms`: refused once `ttl_s` have
    /// passed since it was issued (or when it claims to be issued more than
    /// `ttl_s` ahead of now).
    pub fn verify_queue(
        &self,
        ticket: &str,
        hunt: &str,
        now_ms: u64,
        ttl_s: u32,
    ) -> Result<QueueClaims, TicketError> {
        if ticket.len() > MAX_TICKET_LEN {
            return Err(TicketError::Malformed);
        }
        let (body, mac_b64) = ticket.rsplit_once('.').ok_or(TicketError::Malformed)?;
        let mut fields = body.split('.');
        let (Some(QUEUE_VERSION), Some(hunt_b64), Some(hunter_b64), Some(seq), Some(issued), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(TicketError::Malformed);
        };
        self.check_signed_for(body, mac_b64, hunt_b64, hunt)?;
        let seq: u64 = seq.parse().map_err(|_| TicketError::Malformed)?;
        let issued_ms: u64 = issued.parse().map_err(|_| TicketError::Malformed)?;
        let ttl_ms = u64::from(ttl_s) * 1000;
        if issued_ms.saturating_add(ttl_ms) <= now_ms || issued_ms > now_ms.saturating_add(ttl_ms) {
            return Err(TicketError::Expired);
        }
        let hunter = URL_SAFE_NO_PAD
            .decode(hunter_b64)
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
            .ok_or(TicketError::Malformed)?;
        Ok(QueueClaims {
            hunter,
            seq,
            issued_ms,
        })
    }

    /// The MAC of `body` (any current key), then the ticket's hunt (`hunt_b64`) against
    /// the requested `hunt`: session and queue tickets alike.
    fn check_signed_for(
        &self,
        body: &str,
        mac_b64: &str,
        hunt_b64: &str,
        hunt: &str,
    ) -> Result<(), TicketError> {
        self.check_mac(body, mac_b64)?;
        let ticket_hunt = URL_SAFE_NO_PAD
            .decode(hunt_b64)
            .map_err(|_| TicketError::Malformed)?;
        if ticket_hunt != hunt.as_bytes() {
            return Err(TicketError::OtherHunt);
        }
        Ok(())
    }

    fn check_mac(&self, body: &str, mac_b64: &str) -> Result<(), TicketError> {
        let tag = URL_SAFE_NO_PAD
            .decode(mac_b64)
            .map_err(|_| TicketError::Malformed)?;
        if tag.len() != MAC_BYTES {
            return Err(TicketError::Malformed);
        }
        let verified = self.macs.iter().any(|key| {
            let mut mac = key.clone();
            mac.update(body.as_bytes());
            mac.verify_truncated_left(&tag).is_ok()
        });
        if verified {
            Ok(())
        } else {
            Err(TicketError::BadSignature)
        }
    }

    fn sign(&self, mut ticket: String) -> String {
        if let Some(signer) = self.macs.first() {
            let mut mac = signer.clone();
            mac.update(ticket.as_bytes());
            let tag = mac.finalize().into_bytes();
            ticket.push('.');
            ticket.push_str(&URL_SAFE_NO_PAD.encode(tag.get(..MAC_BYTES).unwrap_or_default()));
        }
        ticket
    }

    /// Verifies a ticket for `hunt` at `now_ms`; a ticket claiming to live longer
    /// than `ttl_s` from now is refused (so lowering the TTL takes effect).
    pub fn verify(
        &self,
        ticket: &str,
        hunt: &str,
        now_ms: u64,
        ttl_s: u32,
    ) -> Result<TicketClaims, TicketError> {
        self.verify_issued(ticket, hunt, now_ms, ttl_s)
            .map(|(claims, _)| claims)
    }

    /// [`TicketKeys::verify`], also returning when the ticket was issued (unix ms;
    /// 0 for a version-1 ticket).
    pub fn verify_issued(
        &self,
        ticket: &str,
        hunt: &str,
        now_ms: u64,
        ttl_s: u32,
    ) -> Result<(TicketClaims, u64), TicketError> {
        if ticket.len() > MAX_TICKET_LEN {
            return Err(TicketError::Malformed);
        }
        let (body, mac_b64) = ticket.rsplit_once('.').ok_or(TicketError::Malformed)?;
        let mut fields = body.split('.');
        let (Some(version), Some(hunt_b64), Some(hunter_b64), Some(exp)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(TicketError::Malformed);
        };
        let issued = match (version, fields.next(), fields.next()) {
            (VERSION_1, None, _) => None,
            (VERSION, Some(issued), None) => Some(issued),
            _ => return Err(TicketError::Malformed),
        };
        self.check_signed_for(body, mac_b64, hunt_b64, hunt)?;
        let expires_s: u32 = exp.parse().map_err(|_| TicketError::Malformed)?;
        let issued_ms: u64 = match issued {
            Some(issued) => issued.parse().map_err(|_| TicketError::Malformed)?,
            None => 0,
        };
        check_expiry(expires_s, now_ms, ttl_s)?;
        let hunter = URL_SAFE_NO_PAD
            .decode(hunter_b64)
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
            .ok_or(TicketError::Malformed)?;
        Ok((TicketClaims { hunter, expires_s }, issued_ms))
    }
}

/// A ticket expiring at `expires_s` is refused at `now_ms` once past, or when it
/// claims to live longer than `ttl_s` from now (so lowering the TTL takes effect).
pub fn check_expiry(expires_s: u32, now_ms: u64, ttl_s: u32) -> Result<(), TicketError> {
    let now_s = now_ms / 1000;
    if u64::from(expires_s) * 1000 <= now_ms || u64::from(expires_s) > now_s + u64::from(ttl_s) + 1
    {
        return Err(TicketError::Expired);
    }
    Ok(())
}

/// Unix second at which a session touched at `now_ms` expires.
pub fn session_expiry_s(now_ms: u64, ttl_s: u32) -> u32 {
    let expires_ms = now_ms.saturating_add(u64::from(ttl_s) * 1000);
    u32::try_from(expires_ms.div_ceil(1000)).unwrap_or(u32::MAX)
}

/// Whether a ticket expiring at `expires_s` is past half its life at `now_ms` and should be renewed.
pub fn needs_renewal(expires_s: u32, now_ms: u64, ttl_s: u32) -> bool {
    let remaining_ms = (u64::from(expires_s) * 1000).saturating_sub(now_ms);
    remaining_ms * 2 < u64::from(ttl_s) * 1000
}
