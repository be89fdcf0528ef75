//! The session store: how hunters are counted in Envoy shared data so that every
//! worker thread of one Envoy process sees one exact count per hunt.
//!
//! Layout (all keys under `huntgate/v1/`, created before traffic, never deleted):
//! - `layout`: u32, how many hunt slots have their keys created;
//! - `registry`: hunt ids joined by `\n`; the position is the hunt's slot (append-only);
//! - `count/<slot>`: u32, hunters holding a slot (the admission gate, CAS-updated);
//! - `shard/<slot>/<k>`: 12-byte records (hunter key u64, expiry second u32), [`SHARDS`] per slot;
//! - `lease/<name>`: owner u64 + until ms u64, one elected worker (the sweeper).
//!
//! Protocol: a join first reserves in `count` (checked against the limit), then
//! inserts its record; if the record was already there it releases the reservation.
//! The sweeper removes expired records first, then decrements `count`. So `count`
//! is never below the number of records, and only transiently above it: the limit
//! can never be exceeded by concurrent joins on different workers.

use sha2::{Digest, Sha256};

use crate::shared_data::{SetOutcome, SharedData, StoreError};

/// Shards per hunt: bounds the bytes copied per join to about `12 × active / SHARDS`.
pub const SHARDS: u32 = 16;
/// Attempts of one compare-and-swap before giving up with [`StoreError::Contention`].
pub const MAX_CAS_ATTEMPTS: u32 = 64;
/// Bytes of one session record.
const RECORD_BYTES: usize = 12;

const LAYOUT_KEY: &str = "huntgate/v1/layout";
const REGISTRY_KEY: &str = "huntgate/v1/registry";

fn count_key(slot: u32) -> String {
    format!("huntgate/v1/count/{slot}")
}

fn shard_key(slot: u32, shard: u32) -> String {
    format!("huntgate/v1/shard/{slot}/{shard}")
}

/// Key of a named lease.
pub fn lease_key(name: &str) -> String {
    format!("huntgate/v1/lease/{name}")
}

/// Stable 64-bit key of a hunter within a hunt (the same on every worker and process).
pub fn hunter_key(hunt: &str, hunter: &str) -> u64 {
    let digest = Sha256::new()
        .chain_update(hunt.as_bytes())
        .chain_update(b"\n")
        .chain_update(hunter.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(digest.get(..8).unwrap_or(&[0; 8]));
    u64::from_le_bytes(first)
}

/// The little-endian u64 at `at`, or 0 when the bytes are short.
pub(crate) fn read_u64_at(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

fn read_u32(bytes: &[u8]) -> u32 {
    bytes
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0)
}

fn create_if_absent<S: SharedData>(
    shared: &S,
    key: &str,
    initial: &[u8],
) -> Result<(), StoreError> {
    if shared.get(key)?.is_none() {
        shared.set(key, initial, 0)?;
    }
    Ok(())
}

/// Creates the keys of slots `0..slots` (and the registry) if absent. Run at configure
/// time, before traffic, because Envoy does not check CAS when a key is first written.
pub fn prepare_layout<S: SharedData>(shared: &S, slots: u32) -> Result<(), StoreError> {
    let prepared = shared
        .get(LAYOUT_KEY)?
        .map(|(v, _)| read_u32(&v))
        .unwrap_or(0);
    if prepared >= slots {
        return Ok(());
    }
    create_if_absent(shared, LAYOUT_KEY, &0u32.to_le_bytes())?;
    create_if_absent(shared, REGISTRY_KEY, b"")?;
    create_if_absent(shared, &lease_key("sweeper"), &[0u8; 16])?;
    create_if_absent(shared, &lease_key("fetcher"), &[0u8; 16])?;
    create_if_absent(shared, crate::throttle::THROTTLE_KEY, b"")?;
    create_if_absent(shared, crate::throttle::THROTTLE_META_KEY, &[0u8; 16])?;
    for slot in prepared..slots {
        create_if_absent(shared, &count_key(slot), &0u32.to_le_bytes())?;
        for shard in 0..SHARDS {
            create_if_absent(shared, &shard_key(slot, shard), b"")?;
        }
    }
    cas_update(shared, LAYOUT_KEY, |current| {
        let now = current.map(read_u32).unwrap_or(0);
        Ok((now < slots).then(|| slots.to_le_bytes().to_vec()))
    })?;
    Ok(())
}

/// Read-modify-write with CAS. `update` returns `Ok(None)` to leave the value as it is.
/// Returns whether a write happened.
pub(crate) fn cas_update<S, F>(shared: &S, key: &str, mut update: F) -> Result<bool, StoreError>
where
    S: SharedData,
    F: FnMut(Option<&[u8]>) -> Result<Option<Vec<u8>>, StoreError>,
{
    for _ in 0..MAX_CAS_ATTEMPTS {
        let current = shared.get(key)?;
        let (value, cas) = match &current {
            Some((value, cas)) => (Some(value.as_slice()), *cas),
            None => return Err(StoreError::MissingKey(key.to_string())),
        };
        let Some(next) = update(value)? else {
            return Ok(false);
        };
        match shared.set(key, &next, cas)? {
            SetOutcome::Written => return Ok(true),
            SetOutcome::CasMismatch => continue,
        }
    }
    Err(StoreError::Contention(key.to_string()))
}

/// Where a hunt's sessions live in this Envoy process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotLookup {
    /// The hunt's slot.
    Slot(u32),
    /// All `max_tracked_hunts` slots are taken by other hunts.
    Untracked,
}

/// A worker's cache of the append-only registry (hunt id → slot).
#[derive(Debug, Default)]
pub struct RegistryCache {
    slots: hashbrown::HashMap<String, u32>,
    known: u32,
}

impl RegistryCache {
    /// Number of hunts known to be registered (the registry only grows).
    pub fn len(&self) -> u32 {
        self.known
    }

    /// Whether no hunt is known.
    pub fn is_empty(&self) -> bool {
        self.known == 0
    }

    /// Hunt ids by slot, as far as known.
    pub fn hunts(&self) -> impl Iterator<Item = (&str, u32)> {
        self.slots.iter().map(|(hunt, slot)| (hunt.as_str(), *slot))
    }

    fn absorb(&mut self, registry: &[u8]) {
        let ids = registry.split(|b| *b == b'\n').filter(|id| !id.is_empty());
        for (slot, id) in (0u32..).zip(ids).skip(self.known as usize) {
            self.slots
                .insert(String::from_utf8_lossy(id).into_owned(), slot);
            self.known = slot + 1;
        }
    }

    /// Re-reads the registry so [`RegistryCache::len`] covers hunts other workers added.
    pub fn refresh<S: SharedData>(&mut self, shared: &S) -> Result<(), StoreError> {
        if let Some((registry, _)) = shared.get(REGISTRY_KEY)? {
            self.absorb(&registry);
        }
        Ok(())
    }

    /// Finds the hunt's slot, registering the hunt if there is room under `cap`.
    pub fn resolve<S: SharedData>(
        &mut self,
        shared: &S,
        hunt: &str,
        cap: u32,
    ) -> Result<SlotLookup, StoreError> {
        if let Some(slot) = self.slots.get(hunt) {
            return Ok(SlotLookup::Slot(*slot));
        }
        let mut outcome = SlotLookup::Untracked;
        cas_update(shared, REGISTRY_KEY, |current| {
            let registry = current.unwrap_or_default();
            self.absorb(registry);
            if let Some(slot) = self.slots.get(hunt) {
                outcome = SlotLookup::Slot(*slot);
                return Ok(None);
            }
            if self.known >= cap {
                outcome = SlotLookup::Untracked;
                return Ok(None);
            }
            outcome = SlotLookup::Slot(self.known);
            let mut next = registry.to_vec();
            next.extend_from_slice(hunt.as_bytes());
            next.push(b'\n');
            Ok(Some(next))
        })?;
        if let SlotLookup::Slot(slot) = outcome {
            self.slots.insert(hunt.to_string(), slot);
            self.known = self.known.max(slot + 1);
        }
        Ok(outcome)
    }
}

/// Result of admitting a hunter into a hunt's slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmitOutcome {
    /// A new session took a slot; `active` counts it.
    Admitted {
        /// Hunters holding a slot after this one joined.
        active: u32,
    },
    /// The hunter already held a live session; it was extended, no slot taken.
    AlreadyActive,
    /// The hunt is at its limit.
    Full {
        /// Hunters holding a slot.
        active: u32,
    },
}

fn find_record(shard: &[u8], key: u64) -> Option<usize> {
    shard
        .chunks_exact(RECORD_BYTES)
        .position(|record| record.get(..8) == Some(&key.to_le_bytes()[..]))
        .map(|index| index * RECORD_BYTES)
}

fn record_expiry(shard: &[u8], offset: usize) -> u32 {
    shard.get(offset + 8..).map(read_u32).unwrap_or(0)
}

/// Moves the record at `offset` to expire no earlier than `expires_s`.
fn extend_record(shard: &mut [u8], offset: usize, expires_s: u32) {
    let expiry = record_expiry(shard, offset).max(expires_s);
    if let Some(field) = shard.get_mut(offset + 8..offset + RECORD_BYTES) {
        field.copy_from_slice(&expiry.to_le_bytes());
    }
}

fn is_live(expires_s: u32, now_ms: u64) -> bool {
    u64::from(expires_s) * 1000 > now_ms
}

/// Admits `key` into `slot` until `expires_s`. With `limit: None` the session is
/// (re)created whatever the count (renewal of a valid ticket).
pub fn admit<S: SharedData>(
    shared: &S,
    slot: u32,
    key: u64,
    expires_s: u32,
    now_ms: u64,
    limit: Option<u32>,
) -> Result<AdmitOutcome, StoreError> {
    let shard = shard_key(slot, (key % u64::from(SHARDS)) as u32);
    // A live session is only extended: it already holds its slot.
    let extended = cas_update(shared, &shard, |current| {
        let mut records = current.unwrap_or_default().to_vec();
        match find_record(&records, key) {
            Some(at) if is_live(record_expiry(&records, at), now_ms) => {
                extend_record(&mut records, at, expires_s);
                Ok(Some(records))
            }
            _ => Ok(None),
        }
    })?;
    if extended {
        return Ok(AdmitOutcome::AlreadyActive);
    }
    let counter = count_key(slot);
    let mut active = 0;
    let mut full = false;
    cas_update(shared, &counter, |current| {
        active = current.map(read_u32).unwrap_or(0);
        full = limit.is_some_and(|limit| active >= limit);
        if full {
            return Ok(None);
        }
        active = active.saturating_add(1);
        Ok(Some(active.to_le_bytes().to_vec()))
    })?;
    if full {
        return Ok(AdmitOutcome::Full { active });
    }
    let mut existed = false;
    let inserted = cas_update(shared, &shard, |current| {
        let mut records = current.unwrap_or_default().to_vec();
        existed = false;
        match find_record(&records, key) {
            Some(at) => {
                existed = true;
                extend_record(&mut records, at, expires_s);
            }
            None => {
                records.extend_from_slice(&key.to_le_bytes());
                records.extend_from_slice(&expires_s.to_le_bytes());
            }
        }
        Ok(Some(records))
    });
    if existed || inserted.is_err() {
        // Give the reservation back: the record was already counted, or never written.
        release(shared, &counter, 1)?;
        active = active.saturating_sub(1);
    }
    inserted?;
    if existed {
        return Ok(AdmitOutcome::AlreadyActive);
    }
    Ok(AdmitOutcome::Admitted { active })
}

fn release<S: SharedData>(shared: &S, counter: &str, n: u32) -> Result<u32, StoreError> {
    let mut left = 0;
    cas_update(shared, counter, |current| {
        left = current.map(read_u32).unwrap_or(0).saturating_sub(n);
        Ok(Some(left.to_le_bytes().to_vec()))
    })?;
    Ok(left)
}

/// Hunters holding a slot in `slot` (expired sessions count until swept).
pub fn active_count<S: SharedData>(shared: &S, slot: u32) -> Result<u32, StoreError> {
    Ok(shared
        .get(&count_key(slot))?
        .map(|(v, _)| read_u32(&v))
        .unwrap_or(0))
}

/// Removes the expired sessions of one slot; returns (sessions removed, active after).
pub fn sweep_slot<S: SharedData>(
    shared: &S,
    slot: u32,
    now_ms: u64,
) -> Result<(u32, u32), StoreError> {
    let counter = count_key(slot);
    let active = active_count(shared, slot)?;
    if active == 0 {
        return Ok((0, 0));
    }
    let mut removed_total = 0u32;
    for shard in 0..SHARDS {
        let mut removed = 0u32;
        cas_update(shared, &shard_key(slot, shard), |current| {
            let records = current.unwrap_or_default();
            let mut kept = Vec::with_capacity(records.len());
            removed = 0;
            for record in records.chunks_exact(RECORD_BYTES) {
                if is_live(record.get(8..).map(read_u32).unwrap_or(0), now_ms) {
                    kept.extend_from_slice(record);
                } else {
                    removed += 1;
                }
            }
            Ok((removed > 0).then_some(kept))
        })?;
        removed_total += removed;
    }
    if removed_total == 0 {
        return Ok((0, active));
    }
    let left = release(shared, &counter, removed_total)?;
    Ok((removed_total, left))
}

/// Takes or renews the lease `name` for `owner` until `now_ms + duration_ms`.
/// Returns whether `owner` holds it.
pub fn acquire_lease<S: SharedData>(
    shared: &S,
    name: &str,
    owner: u64,
    now_ms: u64,
    duration_ms: u64,
) -> Result<bool, StoreError> {
    let key = lease_key(name);
    let Some((value, cas)) = shared.get(&key)? else {
        return Err(StoreError::MissingKey(key));
    };
    let holder = read_u64_at(&value, 0);
    let until = read_u64_at(&value, 8);
    if holder != owner && until > now_ms {
        return Ok(false);
    }
    let mut next = owner.to_le_bytes().to_vec();
    next.extend_from_slice(&now_ms.saturating_add(duration_ms).to_le_bytes());
    Ok(shared.set(&key, &next, cas)? == SetOutcome::Written)
}

/// Bytes of shared data a slot uses for `active` hunters (records plus the counter).
pub fn slot_bytes(active: u32) -> usize {
    active as usize * RECORD_BYTES + 4
}
