//! Throttle ratios: the governor's per-hunt multipliers of `max_hunters`, as
//! kept in Envoy shared data under [`THROTTLE_KEY`] (JSON).
//!
//! With no document the ratio is 1.0 and the configured `max_hunters` apply.

use hashbrown::HashMap;

use crate::config::{GovernorFeed, HuntSettings, MAX_HUNTERS_LIMIT};
use crate::hunt_id::normalize_hunt_id;
use crate::json::{JsonError, Reader, Seen};
use crate::shared_data::{SharedData, StoreError};

/// Shared-data key of the throttle document.
pub const THROTTLE_KEY: &str = "huntgate/v1/throttle";
/// Largest throttle document accepted, in bytes.
pub const MAX_THROTTLE_BYTES: usize = 1 << 20;

/// One hunt's entry in the throttle document (extra fields such as `limit` and
/// `reason` are informative and ignored).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HuntThrottle {
    /// Multiplier of max_hunters, clamped to [0, 1].
    pub ratio: f64,
    /// Replacement for the configured max_hunters, if the governor sets one.
    pub max_hunters: Option<u32>,
}

/// The throttle document, as served by the governor at `GET /v1/throttle`.
#[derive(Debug, Clone, PartialEq)]
pub struct ThrottleTable {
    /// Monotonic version from the governor.
    pub version: u64,
    /// How long the governor considers the document fresh, in seconds (informative).
    pub ttl_s: Option<u32>,
    /// Ratio for hunts not listed.
    pub default_ratio: f64,
    /// Per-hunt entries, by canonical hunt id.
    pub hunts: HashMap<String, HuntThrottle>,
    /// This proxy's shares, in an answer to a lease exchange.
    pub leases: Option<LeaseGrant>,
}

/// Longest lease a governor may grant, in ms.
pub const MAX_LEASE_MS: u32 = 600_000;

/// The shares granted to this proxy by one lease exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseGrant {
    /// How long the shares hold, counted from when this proxy sent its report.
    pub lease_ms: u32,
    /// Share per hunt (canonical id); a governed hunt without one gets the safe share.
    pub hunts: HashMap<String, ShareGrant>,
}

/// One hunt's share for this proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareGrant {
    /// New joins this proxy may hold sessions for (its part of the fleet limit).
    pub share: u32,
}

impl Default for ThrottleTable {
    fn default() -> Self {
        Self {
            version: 0,
            ttl_s: None,
            default_ratio: 1.0,
            hunts: HashMap::new(),
            leases: None,
        }
    }
}

impl ThrottleTable {
    /// Parses and validates a document: ratios finite and within [0, 1],
    /// `max_hunters` within the filter's own bound, hunt ids valid; hunt ids are
    /// case-insensitive (stored lowercase, a hunt listed twice is refused).
    #[inline(never)]
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() > MAX_THROTTLE_BYTES {
            return Err(format!("throttle document over {MAX_THROTTLE_BYTES} bytes"));
        }
        let mut table = read_table(bytes).map_err(|e| e.to_string())?;
        let valid = |r: f64| r.is_finite() && (0.0..=1.0).contains(&r);
        if !valid(table.default_ratio) {
            return Err("default_ratio must be within [0, 1]".to_string());
        }
        let mut hunts = HashMap::with_capacity(table.hunts.len());
        for (raw, entry) in table.hunts.drain() {
            let shown = crate::json::truncated(&raw);
            let hunt = normalize_hunt_id(&raw)
                .map_err(|_| format!("hunts.{shown}: not a valid hunt id"))?;
            if !valid(entry.ratio) {
                return Err(format!("hunts.{shown}.ratio must be within [0, 1]"));
            }
            if entry.max_hunters.is_some_and(|m| m > MAX_HUNTERS_LIMIT) {
                return Err(format!(
                    "hunts.{shown}.max_hunters must be at most {MAX_HUNTERS_LIMIT}"
                ));
            }
            if hunts.insert(hunt, entry).is_some() {
                return Err(format!(
                    "hunts.{shown}: listed twice (hunt ids are case-insensitive)"
                ));
            }
        }
        table.hunts = hunts;
        if let Some(grant) = &mut table.leases {
            if !(1..=MAX_LEASE_MS).contains(&grant.lease_ms) {
                return Err(format!(
                    "leases.lease_ms must be between 1 and {MAX_LEASE_MS}"
                ));
            }
            let mut shares = HashMap::with_capacity(grant.hunts.len());
            for (raw, share) in grant.hunts.drain() {
                let shown = crate::json::truncated(&raw);
                let hunt = normalize_hunt_id(&raw)
                    .map_err(|_| format!("leases.hunts.{shown}: not a valid hunt id"))?;
                if share.share > MAX_HUNTERS_LIMIT {
                    return Err(format!(
                        "leases.hunts.{shown}.share must be at most {MAX_HUNTERS_LIMIT}"
                    ));
                }
                if shares.insert(hunt, share).is_some() {
                    return Err(format!("leases.hunts.{shown}: listed twice"));
                }
            }
            grant.hunts = shares;
        }
        Ok(table)
    }

    /// The enforced limit: floor(max_hunters × ratio).
    pub fn limit(&self, hunt: &str, settings: &HuntSettings) -> u32 {
        let (ratio, max_hunters) = match self.hunts.get(hunt) {
            Some(entry) => (
                entry.ratio,
                entry.max_hunters.unwrap_or(settings.max_hunters),
            ),
            None => (self.default_ratio, settings.max_hunters),
        };
        effective_limit(max_hunters, ratio)
    }
}

/// floor(max_hunters × ratio), with the ratio clamped to [0, 1].
pub fn effective_limit(max_hunters: u32, ratio: f64) -> u32 {
    let ratio = if ratio.is_finite() {
        ratio.clamp(0.0, 1.0)
    } else {
        1.0
    };
    // Exact for every u32 × ratio: f64 holds u32 exactly; a tiny epsilon keeps 0.3 × 10 = 3.
    let product = f64::from(max_hunters) * ratio + 1e-9;
    (product.floor() as u32).min(max_hunters)
}

/// Shared-data key of the feed metadata: publish sequence (u64 LE), the unix
/// ms of the last successful fetch (u64 LE) and the unix ms at which the
/// exchange that brought the document in force was sent (u64 LE; leases count from it).
pub const THROTTLE_META_KEY: &str = "huntgate/v1/throttle_meta";

/// Feed metadata as stored under [`THROTTLE_META_KEY`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedMeta {
    /// Incremented on every published document.
    pub seq: u64,
    /// Unix ms of the last fetch that returned the document in force (0: never).
    pub last_ok_ms: u64,
    /// Unix ms at which the exchange that brought the document in force was sent.
    pub sent_ms: u64,
}

impl FeedMeta {
    fn decode(bytes: &[u8]) -> Self {
        let word = |at: usize| crate::store::read_u64_at(bytes, at);
        Self {
            seq: word(0),
            last_ok_ms: word(8),
            sent_ms: word(16),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = self.seq.to_le_bytes().to_vec();
        out.extend_from_slice(&self.last_ok_ms.to_le_bytes());
        out.extend_from_slice(&self.sent_ms.to_le_bytes());
        out
    }
}

/// Publishes a validated document fetched at `now_ms` (the elected fetcher only).
pub fn publish<S: SharedData>(shared: &S, document: &[u8], now_ms: u64) -> Result<(), StoreError> {
    publish_exchange(shared, document, now_ms, now_ms)
}

/// Publishes a validated document received at `now_ms` in answer to an
/// exchange sent at `sent_ms` (its leases count from `sent_ms`).
#[inline(never)]
pub fn publish_exchange<S: SharedData>(
    shared: &S,
    document: &[u8],
    now_ms: u64,
    sent_ms: u64,
) -> Result<(), StoreError> {
    shared.set(THROTTLE_KEY, document, 0)?;
    crate::store::cas_update(shared, THROTTLE_META_KEY, |current| {
        let meta = FeedMeta::decode(current.unwrap_or_default());
        let next = FeedMeta {
            seq: meta.seq.wrapping_add(1),
            last_ok_ms: now_ms,
            sent_ms,
        };
        Ok(Some(next.encode()))
    })?;
    Ok(())
}

/// Records that the document in force was confirmed current at `now_ms` (a 304).
#[inline(never)]
pub fn confirm<S: SharedData>(shared: &S, now_ms: u64) -> Result<(), StoreError> {
    crate::store::cas_update(shared, THROTTLE_META_KEY, |current| {
        let meta = FeedMeta::decode(current.unwrap_or_default());
        Ok(Some(
            FeedMeta {
                last_ok_ms: now_ms,
                ..meta
            }
            .encode(),
        ))
    })?;
    Ok(())
}

/// What the filter enforces once the governor's document is older than `max_stale`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StalePolicy {
    /// No limit: every join is admitted (and still counted).
    FailOpen,
    /// Limit 0: no new joins; ticket holders keep playing.
    FailClosed,
    /// This ratio of max_hunters.
    Ratio(f64),
}

/// How long a governor document stays in force, and what replaces it after.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Staleness {
    /// Age after which the document is stale, in ms.
    pub max_stale_ms: u64,
    /// The fallback.
    pub on_stale: StalePolicy,
}

/// A worker's copy of the throttle document, re-read only when a new one is published.
#[derive(Debug, Default)]
pub struct ThrottleCache {
    table: ThrottleTable,
    meta: FeedMeta,
    /// Set when the stored document could not be parsed (the last good one stays).
    pub last_error: Option<String>,
}

impl ThrottleCache {
    /// Refreshes from shared data: one small read, plus the document when it changed.
    pub fn refresh<S: SharedData>(&mut self, shared: &S) -> Result<(), StoreError> {
        let Some((meta_bytes, _)) = shared.get(THROTTLE_META_KEY)? else {
            return Ok(());
        };
        let meta = FeedMeta::decode(&meta_bytes);
        if meta.seq != self.meta.seq {
            if let Some((bytes, _)) = shared.get(THROTTLE_KEY)? {
                match ThrottleTable::decode(&bytes) {
                    Ok(table) => {
                        self.table = table;
                        self.last_error = None;
                    }
                    Err(e) => self.last_error = Some(e),
                }
            }
        }
        self.meta = meta;
        Ok(())
    }

    /// The document in force.
    pub fn table(&self) -> &ThrottleTable {
        &self.table
    }

    /// Milliseconds since the last good fetch, or `None` if there never was one.
    pub fn age_ms(&self, now_ms: u64) -> Option<u64> {
        (self.meta.last_ok_ms > 0).then(|| now_ms.saturating_sub(self.meta.last_ok_ms))
    }

    /// This proxy's live share of `hunt`, if its last lease grants one.
    pub fn share(&self, hunt: &str, now_ms: u64) -> Option<u32> {
        let grant = self.table.leases.as_ref()?;
        let live = now_ms < self.meta.sent_ms.saturating_add(u64::from(grant.lease_ms));
        live.then(|| grant.hunts.get(hunt).map(|g| g.share))
            .flatten()
    }

    /// Milliseconds since the exchange that brought the lease in force was sent.
    pub fn lease_age_ms(&self, now_ms: u64) -> Option<u64> {
        self.table
            .leases
            .as_ref()
            .map(|_| now_ms.saturating_sub(self.meta.sent_ms))
    }

    /// The enforced limit for a hunt, or `None` for no limit (fail-open).
    /// Without `feed` (no governor configured) any published document applies.
    ///
    /// With leases, a hunt the governor's document names is governed
    /// fleet-wide: this proxy enforces its live share, else the safe share;
    /// before the first document every hunt gets the safe share.
    pub fn limit(
        &self,
        hunt: &str,
        settings: &HuntSettings,
        now_ms: u64,
        feed: Option<&GovernorFeed>,
    ) -> Option<u32> {
        if let Some(leases) = feed.and_then(|f| f.leases.as_ref()) {
            let no_document_yet = self.meta.last_ok_ms == 0;
            if no_document_yet || self.table.hunts.contains_key(hunt) {
                return Some(self.share(hunt, now_ms).unwrap_or(leases.safe_share));
            }
        }
        if let Some(staleness) = feed.map(|f| &f.staleness) {
            let fresh = self
                .age_ms(now_ms)
                .is_some_and(|age| age <= staleness.max_stale_ms);
            if !fresh {
                // The hunt's capacity stays the governor's (the plugin's
                // max_hunters is only the default for hunts it never named).
                let max_hunters = self
                    .table
                    .hunts
                    .get(hunt)
                    .and_then(|entry| entry.max_hunters)
                    .unwrap_or(settings.max_hunters);
                return match staleness.on_stale {
                    StalePolicy::FailOpen => None,
                    StalePolicy::FailClosed => Some(0),
                    StalePolicy::Ratio(ratio) => Some(effective_limit(max_hunters, ratio)),
                };
            }
        }
        Some(self.table.limit(hunt, settings))
    }
}

/// Reads a throttle document (or a lease answer) as written, before validation;
/// members this version does not know are ignored (the governor may add some).
#[inline(never)]
fn read_table(bytes: &[u8]) -> Result<ThrottleTable, JsonError> {
    const FIELDS: &[&str] = &["version", "ttl_s", "default_ratio", "hunts", "leases"];
    let mut r = Reader::new(bytes);
    let mut table = ThrottleTable::default();
    let mut seen = Seen::default();
    r.object(|r, key| {
        match seen.known(r, &key, FIELDS)? {
            Some("version") => table.version = r.u64()?,
            Some("ttl_s") => table.ttl_s = r.optional(Reader::u32)?,
            Some("default_ratio") => table.default_ratio = r.f64()?,
            Some("hunts") => r.entries(&mut table.hunts, read_hunt_throttle)?,
            Some(_) => table.leases = r.optional(read_grant)?,
            None => r.skip()?,
        }
        Ok(())
    })?;
    r.end()?;
    Ok(table)
}

#[inline(never)]
fn read_hunt_throttle(r: &mut Reader<'_>) -> Result<HuntThrottle, JsonError> {
    let mut ratio = None;
    let mut max_hunters = None;
    let mut seen = Seen::default();
    r.object(|r, key| {
        match seen.known(r, &key, &["ratio", "max_hunters"])? {
            Some("ratio") => ratio = Some(r.f64()?),
            Some(_) => max_hunters = r.optional(Reader::u32)?,
            None => r.skip()?,
        }
        Ok(())
    })?;
    let ratio = ratio.ok_or_else(|| r.error("missing field `ratio`"))?;
    Ok(HuntThrottle { ratio, max_hunters })
}

#[inline(never)]
fn read_grant(r: &mut Reader<'_>) -> Result<LeaseGrant, JsonError> {
    let mut lease_ms = None;
    let mut hunts = HashMap::new();
    let mut seen = Seen::default();
    r.object(|r, key| {
        match seen.first(r, &key, &["lease_ms", "hunts"])? {
            "lease_ms" => lease_ms = Some(r.u32()?),
            _ => r.entries(&mut hunts, read_share)?,
        }
        Ok(())
    })?;
    let lease_ms = lease_ms.ok_or_else(|| r.error("missing field `lease_ms`"))?;
    Ok(LeaseGrant { lease_ms, hunts })
}

#[inline(never)]
fn read_share(r: &mut Reader<'_>) -> Result<ShareGrant, JsonError> {
    let mut share = None;
    let mut seen = Seen::default();
    r.object(|r, key| {
        match seen.known(r, &key, &["share"])? {
            Some(_) => share = Some(r.u32()?),
            None => r.skip()?,
        }
        Ok(())
    })?;
    let share = share.ok_or_else(|| r.error("missing field `share`"))?;
    Ok(ShareGrant { share })
}
