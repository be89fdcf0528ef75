//! The session store: how hunters are counted in Envoy shared data so that every
//! worker thread of one Envoy process sees one exact count per hunt.
//!
//! Layout (all keys under `huntgate/v1/`, created before traffic, never deleted):
//! - `slots`: the slot layout ([`Layout`]): how many slots have their keys
//!   created u32, shards per slot u32 (fixed for the process's life), until when
//!   (ms u64, 0 = none) one worker holds the claim to create the next batch of
//!   [`SLOT_BATCH`] slots. Slots are created lazily, a batch at a time, by the
//!   worker that holds the claim (never by two at once: Envoy does not check CAS
//!   when a key is first written); `layout` (u32) is an earlier version's count,
//!   read once to keep that process's 16 shards per slot;
//! - `registry`: generation u64, then the hunt id of each slot joined by `\n`
//!   (the line's position is the slot); `registry_gen`: the generation alone,
//!   so a worker re-reads the registry only when it changed;
//! - `count/<slot>`: the slot's owner tag u64 (a hash of its hunt id; 0 = never
//!   used), hunters holding a slot u32 (the admission gate, CAS-updated), the
//!   earliest expiry second of its records u32 (0 = unknown) and the joins
//!   rejected so far u32 (wrapping; the lease report's demand);
//! - `shard/<slot>/<k>`: owner tag u64, then 12-byte records (hunter key u64,
//!   expiry second u32) in hunter-key order (found by binary search),
//!   [`shards_for`] per slot (a hunter's shard is `key % shards`); a shard an earlier version wrote out of order is put in order by
//!   its next sweep;
//! - `lease/<name>`: owner u64 + until ms u64, one elected worker (the sweeper,
//!   the fetcher, the registrar);
//! - `ended/<k>`: the sessions ended (upstream header, leave request) whose
//!   tickets may still verify, by this process or, learnt from the lease
//!   exchange, by another proxy of the fleet: 16-byte entries (hunter key u64,
//!   ended at ms u64 whose top bit, [`FLEET_END`], marks an end learnt from the
//!   fleet), [`ENDED_SHARDS`] lists (a key's list is `key %
//!   ENDED_SHARDS`), at most [`MAX_ENDED_PER_SHARD`] each; `ended_gen`: one u32
//!   generation per list, bumped after each change; `ended_signal`: an empty value
//!   rewritten after every change, whose CAS token is all the hot path reads (an
//!   empty value costs the host no copy into the VM).
//! - `queue/<slot>`: the slot's waiting room ([`crate::waiting_room::Queue`]):
//!   owner tag u64, next seq u64, rate window start ms u64, admitted from the
//!   queue in the window u32, then 32-byte places in arrival order (seq u64
//!   whose top bit marks a hunter told to wait, hunter key u64, taken at ms
//!   u64, last try ms u64), at most `max_queue`; `queue_layout`: u32, how many
//!   slots have their queue key created. Only joins of hunts with a waiting
//!   room and the sweeper read it; a reassignment resets it under the new tag.
//!
//! Protocol: a join first reserves in `count` (checked against the limit), then
//! inserts its record; if the record was already there it releases the reservation.
//! The sweeper removes expired records first, then decrements `count`. So `count`
//! is never below the number of records, and only transiently above it: the limit
//! can never be exceeded by concurrent joins on different workers.
//!
//! Ending a session: record the end in `ended/<k>` (every ticket of that hunter
//! issued at or before the end is refused from then on), bump `ended_gen`, then
//! remove the record and give its seat back. A failure at any step leaves the
//! seat counted: an ended ticket may be refused while its seat is still
//! counted, never pass while it is free.
//!
//! Slots are reused: once every slot is taken, a new hunt may take the slot of a
//! hunt with no session left (or, for a hunt the configuration or the governor
//! lists, the slot of the unlisted hunt holding the fewest). Every count and shard
//! value carries its owner's tag and every update checks it, so a worker whose
//! registry view is stale cannot count into the slot's new hunt: its update fails
//! with [`StoreError::SlotMoved`] and it looks the hunt up again. Reassignment is
//! done by one worker at a time (the registrar lease): lock the count under a
//! transit tag (the point from which the old hunt's updates fail and no join takes
//! a seat), empty the shards and the queue under the new tag, give the count the
//! new tag, then rename the slot in the registry. Should the lease lapse mid-way (a worker
//! stalled past it) and a second registrar take the same slot, the first one's
//! later writes are fenced by the count's tag: each reads its key, then the count,
//! then writes on the key's token, so it stops at its next write instead of
//! re-tagging shards or renaming the slot over the second registrar's work.

use sha2::{Digest, Sha256};

use crate::shared_data::{SetOutcome, SharedData, StoreError};
use crate::waiting_room::Queue;

/// Fewest shards per slot (and what a process laid out by an earlier version keeps).
pub const MIN_SHARDS: u32 = 16;
/// Most shards per slot: a join copies about `12 × active / shards` bytes in and
/// out, so at 50,000 active hunters 4.7 KB (it was 37.5 KB with 16 shards).
pub const MAX_SHARDS: u32 = 128;
/// Shard keys one process may create in all (`max_tracked_hunts × shards`, at least
/// `max_tracked_hunts × MIN_SHARDS`): the default 1,024 slots get [`MAX_SHARDS`] each.
pub const SHARD_KEY_BUDGET: u32 = 131_072;
/// Slots whose keys are created at once, when the registry nears the prepared ones.
pub const SLOT_BATCH: u32 = 32;
/// How long one worker's claim to create a batch lasts (creating one takes milliseconds).
const LAYOUT_CLAIM_MS: u64 = 5_000;
/// Attempts of one compare-and-swap before giving up with [`StoreError::Contention`].
pub const MAX_CAS_ATTEMPTS: u32 = 64;
/// Bytes of one session record.
pub const RECORD_BYTES: usize = 12;
/// Bytes of a count value: owner tag, count, earliest expiry, rejected joins.
pub const COUNT_BYTES: usize = 20;
/// Bytes of a shard's owner tag, before its records.
pub const SHARD_TAG_BYTES: usize = 8;
/// How long the registrar lease lasts (one reassignment takes microseconds).
const REGISTRAR_LEASE_MS: u64 = 1_000;
/// A worker that found no slot to reuse for an unlisted hunt does not scan again sooner.
const RESCAN_AFTER_MS: u64 = 1_000;

const LEGACY_LAYOUT_KEY: &str = "huntgate/v1/layout";
const LAYOUT_KEY: &str = "huntgate/v1/slots";
const REGISTRY_KEY: &str = "huntgate/v1/registry";
const REGISTRY_GEN_KEY: &str = "huntgate/v1/registry_gen";
const PROCESS_ID_KEY: &str = "huntgate/v1/process_id";
const ENDED_GEN_KEY: &str = "huntgate/v1/ended_gen";
const ENDED_SIGNAL_KEY: &str = "huntgate/v1/ended_signal";
const QUEUE_LAYOUT_KEY: &str = "huntgate/v1/queue_layout";

fn queue_key(slot: u32) -> String {
    format!("huntgate/v1/queue/{slot}")
}

/// Lists of ended sessions (see the module documentation).
pub const ENDED_SHARDS: u32 = 16;
/// Ended sessions one list holds at once: an entry stays until every ticket it
/// revokes has expired (`session_ttl_s` + 2 s), so a process remembers up to
/// `ENDED_SHARDS × MAX_ENDED_PER_SHARD` (32,768) ends per TTL window.
pub const MAX_ENDED_PER_SHARD: usize = 2048;
/// Bytes of one ended-session entry.
const ENDED_BYTES: usize = 16;
/// The top bit of an entry's end time: set on an end another proxy recorded
/// (learnt from the lease exchange), clear on one this process recorded (which
/// it reports to the governor).
pub const FLEET_END: u64 = 1 << 63;

fn ended_key(shard: u32) -> String {
    format!("huntgate/v1/ended/{shard}")
}

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

fn digest64(parts: &[&[u8]]) -> u64 {
    let mut hasher = Sha256::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update(b"\n");
        }
        hasher.update(part);
    }
    let digest = hasher.finalize();
    read_u64_at(&digest, 0)
}

/// Stable 64-bit key of a hunter within a hunt (the same on every worker and process).
pub fn hunter_key(hunt: &str, hunter: &str) -> u64 {
    digest64(&[hunt.as_bytes(), hunter.as_bytes()])
}

/// The owner tag of a hunt's slot: never 0 (0 marks a slot never used).
pub fn hunt_tag(hunt: &str) -> u64 {
    digest64(&[b"slot", hunt.as_bytes()]).max(1)
}

/// The tag a slot's count carries while registrar `owner` does its `attempt`-th
/// reassignment (to the hunt of `tag`): no hunt's tag (and never 0), so every join
/// and sweep of the slot fails with [`StoreError::SlotMoved`] until it is done;
/// and never another reassignment's, so a registrar stalled past its lease cannot
/// find its fence holding again when a later one gives the slot to the same hunt.
fn transit_tag(tag: u64, owner: u64, attempt: u64) -> u64 {
    digest64(&[
        b"transit",
        &tag.to_le_bytes(),
        &owner.to_le_bytes(),
        &attempt.to_le_bytes(),
    ])
    .max(1)
}

/// The little-endian u64 at `at`, or 0 when the bytes are short.
pub(crate) fn read_u64_at(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

fn read_u32_at(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at + 4)
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

/// Shards per slot for a process configured with `max_tracked_hunts`: the largest
/// power of two within [`SHARD_KEY_BUDGET`], between [`MIN_SHARDS`] and [`MAX_SHARDS`].
pub fn shards_for(max_tracked_hunts: u32) -> u32 {
    let fit = SHARD_KEY_BUDGET / max_tracked_hunts.max(1);
    let power = if fit == 0 { 1 } else { 1 << fit.ilog2() };
    power.clamp(MIN_SHARDS, MAX_SHARDS)
}

/// The slot layout of one process (the `slots` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Slots whose count and shard keys exist (`0..prepared`).
    pub prepared: u32,
    /// Shards per slot.
    pub shards: u32,
    /// Until when (ms) a worker holds the claim to create the next batch (0 = none).
    pub claim_until_ms: u64,
}

impl Layout {
    const BYTES: usize = 16;

    fn decode(bytes: &[u8]) -> Self {
        Self {
            prepared: read_u32_at(bytes, 0),
            shards: read_u32_at(bytes, 4).clamp(1, MAX_SHARDS),
            claim_until_ms: read_u64_at(bytes, 8),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::BYTES);
        out.extend_from_slice(&self.prepared.to_le_bytes());
        out.extend_from_slice(&self.shards.to_le_bytes());
        out.extend_from_slice(&self.claim_until_ms.to_le_bytes());
        out
    }
}

/// The process's slot layout.
pub fn layout<S: SharedData>(shared: &S) -> Result<Layout, StoreError> {
    match shared.get(LAYOUT_KEY)? {
        Some((value, _)) => Ok(Layout::decode(&value)),
        None => Err(StoreError::MissingKey(LAYOUT_KEY.to_string())),
    }
}

/// Creates the process-wide keys and the slot layout if absent, and the first
/// [`SLOT_BATCH`] slots (at most `slots`). Run at configure time, before traffic.
/// Returns the layout's shards per slot: chosen by the first configuration
/// ([`shards_for`] its `slots`), kept for the process's life.
#[inline(never)]
pub fn prepare_layout<S: SharedData>(
    shared: &S,
    slots: u32,
    now_ms: u64,
) -> Result<u32, StoreError> {
    // Created whatever the layout says, for a process whose layout predates them.
    create_if_absent(shared, ENDED_GEN_KEY, &[0u8; ENDED_SHARDS as usize * 4])?;
    create_if_absent(shared, ENDED_SIGNAL_KEY, b"")?;
    for shard in 0..ENDED_SHARDS {
        create_if_absent(shared, &ended_key(shard), b"")?;
    }
    prepare_queues(shared, slots)?;
    create_if_absent(shared, REGISTRY_KEY, &0u64.to_le_bytes())?;
    create_if_absent(shared, REGISTRY_GEN_KEY, &0u64.to_le_bytes())?;
    create_if_absent(shared, PROCESS_ID_KEY, b"")?;
    for lease in ["sweeper", "fetcher", "registrar"] {
        create_if_absent(shared, &lease_key(lease), &[0u8; 16])?;
    }
    create_if_absent(shared, crate::throttle::THROTTLE_KEY, b"")?;
    create_if_absent(shared, crate::throttle::THROTTLE_META_KEY, &[0u8; 16])?;
    if shared.get(LAYOUT_KEY)?.is_none() {
        // A process an earlier version laid out keeps its slots and 16 shards.
        let legacy = shared
            .get(LEGACY_LAYOUT_KEY)?
            .map(|(v, _)| read_u32_at(&v, 0))
            .unwrap_or(0);
        let layout = Layout {
            prepared: legacy,
            shards: if legacy > 0 {
                MIN_SHARDS
            } else {
                shards_for(slots)
            },
            claim_until_ms: 0,
        };
        shared.set(LAYOUT_KEY, &layout.encode(), 0)?;
    }
    let current = layout(shared)?;
    if current.prepared < slots.min(SLOT_BATCH) {
        grow_layout(shared, slots, now_ms)?;
    }
    Ok(current.shards)
}

/// Creates the next [`SLOT_BATCH`] slots (at most `cap` in all) unless `cap` are
/// prepared or another worker holds the claim. Returns the layout as it then is.
#[inline(never)]
pub fn grow_layout<S: SharedData>(shared: &S, cap: u32, now_ms: u64) -> Result<Layout, StoreError> {
    let Some((value, cas)) = shared.get(LAYOUT_KEY)? else {
        return Err(StoreError::MissingKey(LAYOUT_KEY.to_string()));
    };
    let current = Layout::decode(&value);
    if current.prepared >= cap || now_ms < current.claim_until_ms {
        return Ok(current);
    }
    let claimed = Layout {
        claim_until_ms: now_ms.saturating_add(LAYOUT_CLAIM_MS).max(1),
        ..current
    };
    match shared.set(LAYOUT_KEY, &claimed.encode(), cas)? {
        SetOutcome::Written => {}
        // Another worker claimed (or grew) first.
        SetOutcome::CasMismatch => return layout(shared),
    }
    let target = current.prepared.saturating_add(SLOT_BATCH).min(cap);
    let created = (current.prepared..target).try_for_each(|slot| {
        create_if_absent(shared, &count_key(slot), &Count::default().encode())?;
        (0..current.shards).try_for_each(|shard| {
            create_if_absent(shared, &shard_key(slot, shard), &0u64.to_le_bytes())
        })
    });
    let mut done = current;
    cas_update(shared, LAYOUT_KEY, |value| {
        let now = Layout::decode(value.unwrap_or_default());
        done = Layout {
            prepared: if created.is_ok() {
                now.prepared.max(target)
            } else {
                now.prepared
            },
            claim_until_ms: 0,
            ..now
        };
        Ok(Some(done.encode()))
    })?;
    created.map(|()| done)
}

/// Creates the waiting-room keys of slots `0..slots` if absent (kept apart from
/// `layout`, for a process whose layout predates them).
fn prepare_queues<S: SharedData>(shared: &S, slots: u32) -> Result<(), StoreError> {
    let prepared = shared
        .get(QUEUE_LAYOUT_KEY)?
        .map(|(v, _)| read_u32_at(&v, 0))
        .unwrap_or(0);
    if prepared >= slots {
        return Ok(());
    }
    create_if_absent(shared, QUEUE_LAYOUT_KEY, &0u32.to_le_bytes())?;
    for slot in prepared..slots {
        create_if_absent(shared, &queue_key(slot), b"")?;
    }
    cas_update(shared, QUEUE_LAYOUT_KEY, |current| {
        let now = current.map(|v| read_u32_at(v, 0)).unwrap_or(0);
        Ok((now < slots).then(|| slots.to_le_bytes().to_vec()))
    })?;
    Ok(())
}

/// Read-modify-write of `slot`'s waiting room with CAS: `update` gets the queue
/// (empty if the value belongs to another owner) and returns its result and
/// whether to write the queue back. It may run more than once (CAS retries).
/// Fails with [`StoreError::SlotMoved`] when the queue belongs to another hunt
/// (a reassignment resets it under the new owner's tag).
pub fn update_queue<S, T, F>(shared: &S, slot: SlotRef, mut update: F) -> Result<T, StoreError>
where
    S: SharedData,
    F: FnMut(&mut Queue) -> (T, bool),
{
    let mut result = None;
    let key = queue_key(slot.slot);
    cas_update(shared, &key, |current| {
        let mut queue =
            Queue::decode(current.unwrap_or_default(), slot.tag).ok_or_else(|| moved(&key))?;
        let (value, write) = update(&mut queue);
        result = Some(value);
        Ok(write.then(|| queue.encode()))
    })?;
    result.ok_or(StoreError::MissingKey(key))
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

/// A slot's count value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Count {
    tag: u64,
    active: u32,
    /// Lower bound of the earliest record expiry (unix s); 0 = unknown.
    next_expiry_s: u32,
    /// Joins rejected in this slot since it was given to its hunt (wrapping).
    rejected: u32,
}

impl Count {
    fn decode(bytes: &[u8]) -> Self {
        Self {
            tag: read_u64_at(bytes, 0),
            active: read_u32_at(bytes, 8),
            next_expiry_s: read_u32_at(bytes, 12),
            rejected: read_u32_at(bytes, 16),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(COUNT_BYTES);
        out.extend_from_slice(&self.tag.to_le_bytes());
        out.extend_from_slice(&self.active.to_le_bytes());
        out.extend_from_slice(&self.next_expiry_s.to_le_bytes());
        out.extend_from_slice(&self.rejected.to_le_bytes());
        out
    }

    /// Whether this count belongs to `tag`; a never-used slot (tag 0) is claimed by it.
    fn owned_by(&self, tag: u64) -> bool {
        self.tag == tag || (self.tag == 0 && self.active == 0)
    }

    fn with_expiry(mut self, expires_s: u32) -> Self {
        if self.next_expiry_s != 0 {
            self.next_expiry_s = self.next_expiry_s.min(expires_s);
        }
        self
    }
}

/// The count of `slot` as stored (a missing key reads as a never-used count).
fn read_count<S: SharedData>(shared: &S, slot: u32) -> Result<Count, StoreError> {
    Ok(shared
        .get(&count_key(slot))?
        .map(|(v, _)| Count::decode(&v))
        .unwrap_or_default())
}

fn moved(key: &str) -> StoreError {
    StoreError::SlotMoved(key.to_string())
}

/// A hunt's place in this Envoy process: its slot and the owner tag every update checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlotRef {
    /// The slot index.
    pub slot: u32,
    /// The hunt's owner tag ([`hunt_tag`]).
    pub tag: u64,
    /// The process's shards per slot ([`Layout::shards`]).
    pub shards: u32,
}

impl SlotRef {
    /// The key of the shard that holds `key`'s record.
    fn shard_key_of(&self, key: u64) -> String {
        shard_key(self.slot, (key % u64::from(self.shards.max(1))) as u32)
    }
}

/// Where a hunt's sessions live in this Envoy process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotLookup {
    /// The hunt's slot.
    Slot(SlotRef),
    /// Every slot is held by another hunt that may not give it up now.
    Untracked,
}

/// Whether a hunt may take other hunts' slots: listed in the configuration or by the governor.
pub trait Protection {
    /// Whether `hunt` is listed.
    fn is_listed(&self, hunt: &str) -> bool;
}

impl<F: Fn(&str) -> bool> Protection for F {
    fn is_listed(&self, hunt: &str) -> bool {
        self(hunt)
    }
}

/// A worker's cache of the registry (hunt id → slot).
#[derive(Debug, Default)]
pub struct RegistryCache {
    /// Hunt id → its slot and owner tag (the tag hashed once, when read).
    slots: hashbrown::HashMap<String, SlotRef>,
    /// The hunt id and owner tag of each slot ("" and 0 for a cleared line).
    by_slot: Vec<(String, u64)>,
    generation: u64,
    /// The process's shards per slot, read from the layout once (0 = not yet).
    shards: u32,
    /// When this worker last scanned for a reusable slot and found none (ms).
    scan_failed_at_ms: Option<u64>,
    /// Reassignments this worker started as the registrar (each gets its own transit tag).
    reassignments: u64,
}

/// Lines of a registry value (after its generation).
fn registry_lines(registry: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = registry.get(8..).unwrap_or_default();
    let mut lines: Vec<&[u8]> = body.split(|b| *b == b'\n').collect();
    // The value ends with `\n`: the last split piece is empty.
    lines.pop();
    lines.into_iter()
}

fn encode_registry(generation: u64, hunts: &[String]) -> Vec<u8> {
    let mut out = generation.to_le_bytes().to_vec();
    for hunt in hunts {
        out.extend_from_slice(hunt.as_bytes());
        out.push(b'\n');
    }
    out
}

impl RegistryCache {
    /// Number of slots in use (registered hunts).
    pub fn len(&self) -> u32 {
        u32::try_from(self.by_slot.len()).unwrap_or(u32::MAX)
    }

    /// Whether no hunt is registered.
    pub fn is_empty(&self) -> bool {
        self.by_slot.is_empty()
    }

    /// Registered hunts and their slots, by slot (a slot whose line was cleared
    /// by a rename is no hunt's and is left out).
    pub fn hunts(&self) -> impl Iterator<Item = (&str, SlotRef)> {
        let named = (0u32..)
            .zip(&self.by_slot)
            .filter(|(_, (hunt, _))| !hunt.is_empty());
        named.map(|(slot, (hunt, tag))| {
            let slot = SlotRef {
                slot,
                tag: *tag,
                shards: self.shards,
            };
            (hunt.as_str(), slot)
        })
    }

    /// The hunt in `slot` and its reference, if the slot is a hunt's.
    pub fn slot(&self, slot: u32) -> Option<(&str, SlotRef)> {
        let (hunt, tag) = self.by_slot.get(slot as usize)?;
        let slot = SlotRef {
            slot,
            tag: *tag,
            shards: self.shards,
        };
        (!hunt.is_empty()).then_some((hunt.as_str(), slot))
    }

    /// The process's shards per slot (0 until the registry was first read).
    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// Reads the shards per slot from the layout, once.
    fn load_shards<S: SharedData>(&mut self, shared: &S) -> Result<(), StoreError> {
        if self.shards == 0 {
            self.shards = layout(shared)?.shards;
        }
        Ok(())
    }

    /// The registry generation this cache holds (changes with every registration).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// `hunt`'s slot as this worker last saw the registry (no registration, no read).
    pub fn lookup(&self, hunt: &str) -> Option<SlotRef> {
        self.slots.get(hunt).copied()
    }

    /// Drops what this worker knows of `hunt`'s slot (it moved to another hunt).
    pub fn forget(&mut self, hunt: &str) {
        self.slots.remove(hunt);
    }

    fn absorb(&mut self, registry: &[u8]) {
        let generation = read_u64_at(registry, 0);
        if generation == self.generation && !self.by_slot.is_empty() {
            return;
        }
        self.generation = generation;
        self.slots.clear();
        self.by_slot.clear();
        for (slot, id) in (0u32..).zip(registry_lines(registry)) {
            let hunt = String::from_utf8_lossy(id).into_owned();
            let tag = if hunt.is_empty() {
                0
            } else {
                let tag = hunt_tag(&hunt);
                let shards = self.shards;
                self.slots
                    .insert(hunt.clone(), SlotRef { slot, tag, shards });
                tag
            };
            self.by_slot.push((hunt, tag));
        }
    }

    /// Re-reads the registry when its generation changed (one 8-byte read otherwise).
    #[inline(never)]
    pub fn refresh<S: SharedData>(&mut self, shared: &S) -> Result<(), StoreError> {
        self.load_shards(shared)?;
        let generation = shared
            .get(REGISTRY_GEN_KEY)?
            .map(|(v, _)| read_u64_at(&v, 0))
            .unwrap_or(0);
        if generation == self.generation && generation != 0 {
            return Ok(());
        }
        if let Some((registry, _)) = shared.get(REGISTRY_KEY)? {
            self.absorb(&registry);
        }
        Ok(())
    }

    /// Finds the hunt's slot, registering the hunt if there is room under `cap`,
    /// else reusing a slot (see the module documentation).
    #[inline(never)]
    pub fn resolve<S: SharedData>(
        &mut self,
        shared: &S,
        hunt: &str,
        cap: u32,
        listed: &dyn Protection,
        now_ms: u64,
        owner: u64,
    ) -> Result<SlotLookup, StoreError> {
        if let Some(slot) = self.slots.get(hunt) {
            return Ok(SlotLookup::Slot(*slot));
        }
        self.load_shards(shared)?;
        let tag = hunt_tag(hunt);
        for attempt in 0..3 {
            let prepared = layout(shared)?.prepared;
            let room = cap.min(prepared);
            let mut outcome = None;
            let mut generation = 0;
            cas_update(shared, REGISTRY_KEY, |current| {
                let registry = current.unwrap_or_default();
                self.absorb(registry);
                outcome = None;
                if let Some(slot) = self.slots.get(hunt) {
                    outcome = Some(slot.slot);
                    return Ok(None);
                }
                if self.len() >= room {
                    return Ok(None);
                }
                let slot = self.len();
                outcome = Some(slot);
                generation = self.generation.wrapping_add(1).max(1);
                let mut next = generation.to_le_bytes().to_vec();
                next.extend_from_slice(registry.get(8..).unwrap_or_default());
                next.extend_from_slice(hunt.as_bytes());
                next.push(b'\n');
                Ok(Some(next))
            })?;
            if generation != 0 {
                publish_generation(shared, generation)?;
                // This cache held the registry just written but for the line appended:
                // add it, so the next registration does not rebuild the whole cache
                // (configuring 10,000 listed hunts was quadratic in hash work).
                self.generation = generation;
                self.by_slot.push((hunt.to_string(), tag));
            }
            if let Some(slot) = outcome {
                // Nearing the prepared slots: create the next batch ahead of need.
                // The hunt has its slot either way: a failure here is retried by the
                // next registration.
                if prepared < cap && slot + SLOT_BATCH / 2 >= prepared {
                    let _ = grow_layout(shared, cap, now_ms);
                }
                let slot = SlotRef {
                    slot,
                    tag,
                    shards: self.shards,
                };
                self.slots.insert(hunt.to_string(), slot);
                return Ok(SlotLookup::Slot(slot));
            }
            if self.len() >= cap {
                break;
            }
            // Room under `cap` but not yet prepared: create the next batch, then retry.
            let grown = grow_layout(shared, cap, now_ms)?;
            if grown.prepared <= self.len() && attempt > 0 {
                // Another worker is creating it: this join sees the store busy.
                return Err(StoreError::Contention(LAYOUT_KEY.to_string()));
            }
        }
        if self.len() < cap {
            return Err(StoreError::Contention(LAYOUT_KEY.to_string()));
        }
        self.reuse(shared, hunt, listed, now_ms, owner)
    }

    /// Every slot is registered: take one over, as the registrar.
    fn reuse<S: SharedData>(
        &mut self,
        shared: &S,
        hunt: &str,
        listed: &dyn Protection,
        now_ms: u64,
        owner: u64,
    ) -> Result<SlotLookup, StoreError> {
        let protected = listed.is_listed(hunt);
        let recently_failed = self
            .scan_failed_at_ms
            .is_some_and(|at| now_ms < at + RESCAN_AFTER_MS);
        if !protected && recently_failed {
            return Ok(SlotLookup::Untracked);
        }
        if !acquire_lease(shared, "registrar", owner, now_ms, REGISTRAR_LEASE_MS)? {
            return Ok(SlotLookup::Untracked);
        }
        let result = self.reuse_as_registrar(shared, hunt, protected, listed, owner);
        release_lease(shared, "registrar", owner)?;
        let lookup = result?;
        if lookup == SlotLookup::Untracked && !protected {
            self.scan_failed_at_ms = Some(now_ms);
        }
        Ok(lookup)
    }

    fn reuse_as_registrar<S: SharedData>(
        &mut self,
        shared: &S,
        hunt: &str,
        protected: bool,
        listed: &dyn Protection,
        owner: u64,
    ) -> Result<SlotLookup, StoreError> {
        let tag = hunt_tag(hunt);
        for _ in 0..MAX_CAS_ATTEMPTS {
            self.refresh_now(shared)?;
            if let Some(slot) = self.slots.get(hunt) {
                return Ok(SlotLookup::Slot(*slot));
            }
            let Some(victim) = self.pick_victim(shared, protected, listed)? else {
                return Ok(SlotLookup::Untracked);
            };
            // Lock the count under the transit tag: from here the old hunt's updates
            // fail, and no join can take a seat (not even one of this hunt, from a
            // worker that still knows its slot from an earlier reassignment) until
            // every shard is empty under the new tag.
            self.reassignments = self.reassignments.wrapping_add(1);
            let transit = transit_tag(tag, owner, self.reassignments);
            let mut taken = false;
            cas_update(shared, &count_key(victim.slot), |current| {
                let count = Count::decode(current.unwrap_or_default());
                taken = count.tag == victim.tag && (victim.evict || count.active == 0);
                Ok(taken.then(|| {
                    Count {
                        tag: transit,
                        ..Count::default()
                    }
                    .encode()
                }))
            })?;
            if !taken {
                continue;
            }
            // Every write below is fenced by the count's tag: a registrar whose lease
            // lapsed mid-way (a stalled worker) stops at its next write once another
            // registrar has taken the slot, instead of writing over that registrar's
            // work. The slot is then looked for again.
            let locked = Fence {
                slot: victim.slot,
                tag: transit,
            };
            let mut held = true;
            for shard in 0..self.shards {
                let key = shard_key(victim.slot, shard);
                held = held && locked.set(shared, &key, &tag.to_le_bytes())?;
            }
            // The old hunt's queue goes with its seats.
            let queue = Queue::empty(tag).encode();
            held = held && locked.set(shared, &queue_key(victim.slot), &queue)?;
            held = held && locked.unlock(shared, tag)?;
            let owned = Fence {
                slot: victim.slot,
                tag,
            };
            if !(held && self.rename(shared, owned, hunt)?) {
                continue;
            }
            let slot = SlotRef {
                slot: victim.slot,
                tag,
                shards: self.shards,
            };
            self.slots.insert(hunt.to_string(), slot);
            return Ok(SlotLookup::Slot(slot));
        }
        Err(StoreError::Contention(REGISTRY_KEY.to_string()))
    }

    fn refresh_now<S: SharedData>(&mut self, shared: &S) -> Result<(), StoreError> {
        self.load_shards(shared)?;
        if let Some((registry, _)) = shared.get(REGISTRY_KEY)? {
            self.absorb(&registry);
        }
        Ok(())
    }

    /// A slot to take over: the first whose hunt holds no session (a listed hunt's
    /// only for a listed hunt); failing that, for a listed hunt, the unlisted hunt's
    /// slot with the fewest sessions.
    fn pick_victim<S: SharedData>(
        &self,
        shared: &S,
        protected: bool,
        listed: &dyn Protection,
    ) -> Result<Option<Victim>, StoreError> {
        let mut fewest: Option<(u32, Victim)> = None;
        for (slot, (owner, _)) in (0u32..).zip(&self.by_slot) {
            let owner_listed = listed.is_listed(owner);
            if owner_listed && !protected {
                continue;
            }
            let Some((value, _)) = shared.get(&count_key(slot))? else {
                continue;
            };
            let count = Count::decode(&value);
            // The CAS that takes the slot expects the tag seen here.
            let tag = count.tag;
            if count.active == 0 {
                return Ok(Some(Victim {
                    slot,
                    tag,
                    evict: false,
                }));
            }
            if protected && !owner_listed && fewest.is_none_or(|(n, _)| count.active < n) {
                fewest = Some((
                    count.active,
                    Victim {
                        slot,
                        tag,
                        evict: true,
                    },
                ));
            }
        }
        Ok(fewest.map(|(_, victim)| victim))
    }

    /// Names `hunt` as the owner of the fenced slot in the registry (the registrar
    /// only). Returns false, renaming nothing, once the slot's count carries another
    /// tag than the fence's (another registrar took the slot since).
    fn rename<S: SharedData>(
        &mut self,
        shared: &S,
        fence: Fence,
        hunt: &str,
    ) -> Result<bool, StoreError> {
        let slot = fence.slot;
        let mut generation = 0;
        let mut held = true;
        cas_update(shared, REGISTRY_KEY, |current| {
            let registry = current.unwrap_or_default();
            // Read after the registry, so a later registrar's rename fails this CAS.
            held = fence.holds(shared)?;
            if !held {
                return Ok(None);
            }
            let mut hunts: Vec<String> = registry_lines(registry)
                .map(|id| String::from_utf8_lossy(id).into_owned())
                .collect();
            // Another registration of this hunt cannot happen while the registry is
            // full (appends need room, reuses need the registrar lease), but if the
            // hunt is listed elsewhere, that listing goes.
            for other in hunts.iter_mut() {
                if other == hunt {
                    other.clear();
                }
            }
            let Some(line) = hunts.get_mut(slot as usize) else {
                return Ok(None);
            };
            *line = hunt.to_string();
            generation = read_u64_at(registry, 0).wrapping_add(1).max(1);
            Ok(Some(encode_registry(generation, &hunts)))
        })?;
        if held {
            publish_generation(shared, generation)?;
        }
        Ok(held)
    }
}

/// Publishes registry `generation` in `registry_gen`, unless a later one is there
/// already: two registrations writing it out of order must not leave it behind
/// the registry, or workers that compare it with theirs would miss the later one.
fn publish_generation<S: SharedData>(shared: &S, generation: u64) -> Result<(), StoreError> {
    cas_update(shared, REGISTRY_GEN_KEY, |current| {
        let published = read_u64_at(current.unwrap_or_default(), 0);
        Ok((published < generation).then(|| generation.to_le_bytes().to_vec()))
    })?;
    Ok(())
}

/// The registrar's fence while it reassigns `slot`: the owner tag it wrote in the
/// slot's count. Its writes land only while the count still carries that tag.
#[derive(Debug, Clone, Copy)]
struct Fence {
    slot: u32,
    tag: u64,
}

impl Fence {
    /// Whether the slot's count still carries the fence's tag.
    fn holds<S: SharedData>(&self, shared: &S) -> Result<bool, StoreError> {
        Ok(read_count(shared, self.slot)?.tag == self.tag)
    }

    /// Replaces the fence's tag in the count by `tag` (the registrar's last step
    /// before the rename: joins of `tag` may take seats from here). Returns whether
    /// the fence still held.
    fn unlock<S: SharedData>(&self, shared: &S, tag: u64) -> Result<bool, StoreError> {
        let mut held = false;
        cas_update(shared, &count_key(self.slot), |current| {
            let count = Count::decode(current.unwrap_or_default());
            held = count.tag == self.tag;
            Ok(held.then(|| Count { tag, ..count }.encode()))
        })?;
        Ok(held)
    }

    /// Writes `value` to `key` if the fence holds: [`cas_update`] reads the key
    /// first, the count is read next, and the write is conditional on the key's
    /// token, so a write of another registrar that took the slot after the count was
    /// read makes it fail (and the retry sees the count moved). Returns whether it wrote.
    fn set<S: SharedData>(&self, shared: &S, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        cas_update(shared, key, |_| {
            Ok(self.holds(shared)?.then(|| value.to_vec()))
        })
    }
}

/// A slot chosen for reuse, with the tag its count must still have.
#[derive(Debug, Clone, Copy)]
struct Victim {
    slot: u32,
    tag: u64,
    /// Take it even with sessions (a listed hunt displacing an unlisted one).
    evict: bool,
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

/// The records of a shard value owned by `tag` (a never-used shard counts as empty).
fn shard_records(value: &[u8], tag: u64) -> Option<&[u8]> {
    let owner = read_u64_at(value, 0);
    if owner != tag && owner != 0 {
        return None;
    }
    Some(value.get(SHARD_TAG_BYTES..).unwrap_or_default())
}

/// Where `key`'s record is in `records` (kept in key order): `Ok(offset)`, or
/// `Err(offset)` where it would be inserted. A binary search, so a join's cost does
/// not grow with the shard's length beyond the copy of its bytes.
fn search_record(records: &[u8], key: u64) -> Result<usize, usize> {
    let (mut low, mut high) = (0, records.len() / RECORD_BYTES);
    while low < high {
        let middle = low + (high - low) / 2;
        match read_u64_at(records, middle * RECORD_BYTES).cmp(&key) {
            std::cmp::Ordering::Less => low = middle + 1,
            std::cmp::Ordering::Greater => high = middle,
            std::cmp::Ordering::Equal => return Ok(middle * RECORD_BYTES),
        }
    }
    Err(low * RECORD_BYTES)
}

fn find_record(records: &[u8], key: u64) -> Option<usize> {
    search_record(records, key).ok()
}

fn record_expiry(records: &[u8], offset: usize) -> u32 {
    read_u32_at(records, offset + 8)
}

fn is_live(expires_s: u32, now_ms: u64) -> bool {
    u64::from(expires_s) * 1000 > now_ms
}

/// The shard value of `tag` holding `records` with the record at `offset` moved to
/// expire no earlier than `expires_s` (one allocation, one copy).
fn shard_value_extended(tag: u64, records: &[u8], offset: usize, expires_s: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(SHARD_TAG_BYTES + records.len());
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(records);
    let field = SHARD_TAG_BYTES + offset + 8;
    let expiry = record_expiry(records, offset).max(expires_s);
    if let Some(bytes) = out.get_mut(field..field + 4) {
        bytes.copy_from_slice(&expiry.to_le_bytes());
    }
    out
}

/// The shard value of `tag` holding `records` with a record (`key`, `expires_s`)
/// inserted at `offset`, keeping key order (one allocation, one copy).
fn shard_value_inserted(
    tag: u64,
    records: &[u8],
    offset: usize,
    key: u64,
    expires_s: u32,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(SHARD_TAG_BYTES + records.len() + RECORD_BYTES);
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(records.get(..offset).unwrap_or_default());
    out.extend_from_slice(&key.to_le_bytes());
    out.extend_from_slice(&expires_s.to_le_bytes());
    out.extend_from_slice(records.get(offset..).unwrap_or_default());
    out
}

/// Extends `key`'s live record in `shard`, if it has one; returns whether it did.
fn extend_live<S: SharedData>(
    shared: &S,
    slot: SlotRef,
    shard: &str,
    key: u64,
    expires_s: u32,
    now_ms: u64,
) -> Result<bool, StoreError> {
    cas_update(shared, shard, |current| {
        let value = current.unwrap_or_default();
        let records = shard_records(value, slot.tag).ok_or_else(|| moved(shard))?;
        Ok(match find_record(records, key) {
            Some(at) if is_live(record_expiry(records, at), now_ms) => {
                Some(shard_value_extended(slot.tag, records, at, expires_s))
            }
            _ => None,
        })
    })
}

/// Takes a seat in `slot`'s count unless `limit` is reached: `Ok(Ok(active))`
/// after taking it, `Ok(Err(active))` when the hunt is full.
fn reserve<S: SharedData>(
    shared: &S,
    slot: SlotRef,
    expires_s: u32,
    limit: Option<u32>,
) -> Result<Result<u32, u32>, StoreError> {
    let counter = count_key(slot.slot);
    let mut outcome = Err(0);
    cas_update(shared, &counter, |current| {
        let count = Count::decode(current.unwrap_or_default());
        if !count.owned_by(slot.tag) {
            return Err(moved(&counter));
        }
        if limit.is_some_and(|limit| count.active >= limit) {
            outcome = Err(count.active);
            return Ok(None);
        }
        let active = count.active.saturating_add(1);
        outcome = Ok(active);
        let next = Count {
            tag: slot.tag,
            active,
            ..count.with_expiry(expires_s)
        };
        Ok(Some(next.encode()))
    })?;
    Ok(outcome)
}

/// Admits `key` into `slot` until `expires_s`. With `limit: None` the session is
/// (re)created whatever the count (renewal of a valid ticket). Fails with
/// [`StoreError::SlotMoved`] when the slot now belongs to another hunt.
///
/// Host calls: a join into a hunt with room reads and writes the count once and
/// the hunter's shard once; a join into a full hunt reads the count and the shard
/// (a hunter already holding a seat keeps it); a renewal reads and writes the
/// shard once.
pub fn admit<S: SharedData>(
    shared: &S,
    slot: SlotRef,
    key: u64,
    expires_s: u32,
    now_ms: u64,
    limit: Option<u32>,
) -> Result<AdmitOutcome, StoreError> {
    let shard = slot.shard_key_of(key);
    // A renewal expects its live record: extend it, taking no seat.
    if limit.is_none() && extend_live(shared, slot, &shard, key, expires_s, now_ms)? {
        return Ok(AdmitOutcome::AlreadyActive);
    }
    // A join reserves first (most joins are new hunters); the record write below
    // tells whether the hunter already held a seat.
    let mut active = match reserve(shared, slot, expires_s, limit)? {
        Ok(active) => active,
        Err(active) => {
            // A full hunt: a hunter re-joining without a ticket keeps their seat.
            if extend_live(shared, slot, &shard, key, expires_s, now_ms)? {
                return Ok(AdmitOutcome::AlreadyActive);
            }
            return Ok(AdmitOutcome::Full { active });
        }
    };
    let mut existed = false;
    let inserted = cas_update(shared, &shard, |current| {
        let value = current.unwrap_or_default();
        let records = shard_records(value, slot.tag).ok_or_else(|| moved(&shard))?;
        let next = match search_record(records, key) {
            Ok(at) => {
                existed = true;
                shard_value_extended(slot.tag, records, at, expires_s)
            }
            Err(at) => {
                existed = false;
                shard_value_inserted(slot.tag, records, at, key, expires_s)
            }
        };
        Ok(Some(next))
    });
    if existed || inserted.is_err() {
        // Give the reservation back: the record was already counted, or never written.
        release(shared, slot, 1, None).map_err(|e| unreleased(slot, 1, &e))?;
        active = active.saturating_sub(1);
    }
    inserted?;
    if existed {
        return Ok(AdmitOutcome::AlreadyActive);
    }
    Ok(AdmitOutcome::Admitted { active })
}

fn unreleased(slot: SlotRef, seats: u32, cause: &StoreError) -> StoreError {
    StoreError::Unreleased {
        slot: slot.slot,
        tag: slot.tag,
        seats,
        cause: cause.to_string(),
    }
}

/// Gives back `seats` that [`StoreError::Unreleased`] reported (nothing if the slot went
/// to another hunt meanwhile: its count started over).
#[inline(never)]
pub fn give_back<S: SharedData>(shared: &S, slot: SlotRef, seats: u32) -> Result<(), StoreError> {
    release(shared, slot, seats, None).map(|_| ())
}

/// Takes `n` off the slot's count, if the slot is still the hunt's; with
/// `next_expiry_s`, also records the earliest expiry left. Returns the count left.
fn release<S: SharedData>(
    shared: &S,
    slot: SlotRef,
    n: u32,
    next_expiry_s: Option<(u32, u32)>,
) -> Result<u32, StoreError> {
    let mut left = 0;
    cas_update(shared, &count_key(slot.slot), |current| {
        let count = Count::decode(current.unwrap_or_default());
        if count.tag != slot.tag {
            // The slot went to another hunt, which starts from an empty count.
            left = 0;
            return Ok(None);
        }
        left = count.active.saturating_sub(n);
        let next_expiry_s = match next_expiry_s {
            // Reservations without a record yet (joins in flight): not known.
            Some((kept, _)) if left > kept => 0,
            Some((_, earliest)) => earliest,
            None => count.next_expiry_s,
        };
        Ok(Some(
            Count {
                active: left,
                next_expiry_s,
                ..count
            }
            .encode(),
        ))
    })?;
    Ok(left)
}

/// Adds `n` rejected joins to the slot's demand counter (the worker's batch,
/// flushed on its tick); nothing when the slot belongs to another hunt now.
#[inline(never)]
pub fn add_rejected<S: SharedData>(shared: &S, slot: SlotRef, n: u32) -> Result<(), StoreError> {
    cas_update(shared, &count_key(slot.slot), |current| {
        let count = Count::decode(current.unwrap_or_default());
        // A slot not admitted into yet still carries tag 0: its first rejects claim it,
        // as a first admission would (found by the shared_data_records fuzz target).
        Ok(count.owned_by(slot.tag).then(|| {
            Count {
                rejected: count.rejected.wrapping_add(n),
                tag: slot.tag,
                ..count
            }
            .encode()
        }))
    })?;
    Ok(())
}

/// (hunters holding a slot, joins rejected so far) of `slot`; zeros when the
/// slot belongs to another hunt.
pub fn slot_stats<S: SharedData>(shared: &S, slot: SlotRef) -> Result<(u32, u32), StoreError> {
    let count = read_count(shared, slot.slot)?;
    Ok(if count.tag == slot.tag {
        (count.active, count.rejected)
    } else {
        (0, 0)
    })
}

/// Hunters holding a slot in `slot` (expired sessions count until swept); 0 when
/// the slot belongs to another hunt.
pub fn active_count<S: SharedData>(shared: &S, slot: SlotRef) -> Result<u32, StoreError> {
    let count = read_count(shared, slot.slot)?;
    Ok(if count.tag == slot.tag {
        count.active
    } else {
        0
    })
}

/// What a sweep of one slot did and left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Sessions removed (their seats given back).
    pub removed: u32,
    /// Hunters holding a seat after the sweep.
    pub active: u32,
    /// The earliest expiry (unix s) of the records left, as the count now
    /// records it: `None` when unknown (joins were in flight) or nothing is left.
    pub next_expiry_s: Option<u32>,
}

/// Removes the expired sessions of one slot; returns (sessions removed, active after).
/// Reads only the count when no record of the slot can have expired yet.
pub fn sweep_slot<S: SharedData>(
    shared: &S,
    slot: SlotRef,
    now_ms: u64,
) -> Result<(u32, u32), StoreError> {
    sweep(shared, slot, now_ms).map(|swept| (swept.removed, swept.active))
}

/// [`sweep_slot`], also telling when the slot's earliest record expires.
#[inline(never)]
pub fn sweep<S: SharedData>(shared: &S, slot: SlotRef, now_ms: u64) -> Result<Swept, StoreError> {
    let count = read_count(shared, slot.slot)?;
    let known = |expiry_s: u32| (expiry_s != 0 && expiry_s != u32::MAX).then_some(expiry_s);
    if count.tag != slot.tag || count.active == 0 {
        return Ok(Swept {
            removed: 0,
            active: 0,
            next_expiry_s: None,
        });
    }
    if count.next_expiry_s != 0 && is_live(count.next_expiry_s, now_ms) {
        return Ok(Swept {
            removed: 0,
            active: count.active,
            next_expiry_s: known(count.next_expiry_s),
        });
    }
    let mut removed_total = 0u32;
    let mut kept_total = 0u32;
    let mut earliest = u32::MAX;
    for shard in 0..slot.shards {
        let key = shard_key(slot.slot, shard);
        let mut removed = 0u32;
        let mut kept = 0u32;
        let mut shard_earliest = u32::MAX;
        let owned = cas_update(shared, &key, |current| {
            let value = current.unwrap_or_default();
            let Some(records) = shard_records(value, slot.tag) else {
                return Err(moved(&key));
            };
            let mut next = Vec::with_capacity(value.len());
            next.extend_from_slice(&slot.tag.to_le_bytes());
            (removed, kept, shard_earliest) = (0, 0, u32::MAX);
            let mut in_order = true;
            let mut previous = None;
            for record in records.chunks_exact(RECORD_BYTES) {
                let expiry = read_u32_at(record, 8);
                if is_live(expiry, now_ms) {
                    let key = read_u64_at(record, 0);
                    in_order &= previous.is_none_or(|p| p < key);
                    previous = Some(key);
                    next.extend_from_slice(record);
                    kept += 1;
                    shard_earliest = shard_earliest.min(expiry);
                } else {
                    removed += 1;
                }
            }
            if !in_order {
                // Written out of key order (an earlier filter version appended):
                // put in order, a hunter's duplicate records merged into one.
                let merged = in_key_order(next.get(SHARD_TAG_BYTES..).unwrap_or_default());
                let duplicates = kept - (merged.len() / RECORD_BYTES) as u32;
                removed += duplicates;
                kept -= duplicates;
                next.truncate(SHARD_TAG_BYTES);
                next.extend_from_slice(&merged);
            }
            Ok((removed > 0 || !in_order).then_some(next))
        });
        match owned {
            Ok(_) => {}
            // The slot was taken over meanwhile: nothing of this hunt is left to sweep.
            Err(StoreError::SlotMoved(_)) => {
                return Ok(Swept {
                    removed: removed_total,
                    active: 0,
                    next_expiry_s: None,
                })
            }
            Err(e) => {
                // Records already removed from earlier shards still hold seats: give
                // them back now, or report them for later.
                if removed_total > 0 {
                    release(shared, slot, removed_total, None)
                        .map_err(|r| unreleased(slot, removed_total, &r))?;
                }
                return Err(e);
            }
        }
        removed_total += removed;
        kept_total += kept;
        earliest = earliest.min(shard_earliest);
    }
    let left = release(shared, slot, removed_total, Some((kept_total, earliest)))
        .map_err(|e| unreleased(slot, removed_total, &e))?;
    Ok(Swept {
        removed: removed_total,
        active: left,
        // As `release` recorded it: unknown while reservations await their records.
        next_expiry_s: if left > kept_total {
            None
        } else {
            known(earliest)
        },
    })
}

/// `records` sorted by hunter key, each hunter's duplicates merged into one record
/// with the latest expiry.
fn in_key_order(records: &[u8]) -> Vec<u8> {
    let mut sorted: Vec<(u64, u32)> = records
        .chunks_exact(RECORD_BYTES)
        .map(|record| (read_u64_at(record, 0), read_u32_at(record, 8)))
        .collect();
    crate::sort::sort(&mut sorted);
    let mut out: Vec<u8> = Vec::with_capacity(records.len());
    let mut last: Option<u64> = None;
    for (key, expiry) in sorted {
        if last == Some(key) {
            // Sorted by (key, expiry): the later duplicate holds the later expiry.
            let at = out.len().saturating_sub(RECORD_BYTES);
            out.truncate(at);
        }
        out.extend_from_slice(&key.to_le_bytes());
        out.extend_from_slice(&expiry.to_le_bytes());
        last = Some(key);
    }
    out
}

/// Takes or renews the lease `name` for `owner` until `now_ms + duration_ms`.
/// Returns whether `owner` holds it.
#[inline(never)]
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

/// The identity every worker of this Envoy process agrees on: the first
/// `candidate` stored wins.
pub fn process_id<S: SharedData>(shared: &S, candidate: &str) -> Result<String, StoreError> {
    let mut id = candidate.to_string();
    cas_update(shared, PROCESS_ID_KEY, |current| {
        let stored = current.unwrap_or_default();
        if stored.is_empty() {
            id = candidate.to_string();
            return Ok(Some(candidate.as_bytes().to_vec()));
        }
        id = String::from_utf8_lossy(stored).into_owned();
        Ok(None)
    })?;
    Ok(id)
}

/// Gives the lease `name` up, if `owner` holds it.
pub fn release_lease<S: SharedData>(shared: &S, name: &str, owner: u64) -> Result<(), StoreError> {
    let key = lease_key(name);
    let Some((value, cas)) = shared.get(&key)? else {
        return Err(StoreError::MissingKey(key));
    };
    if read_u64_at(&value, 0) == owner {
        shared.set(&key, &[0u8; 16], cas)?;
    }
    Ok(())
}

/// Bytes of shared data a slot of `shards` shards uses for `active` hunters
/// (records, shard tags, count).
pub fn slot_bytes(active: u32, shards: u32) -> usize {
    active as usize * RECORD_BYTES + shards as usize * SHARD_TAG_BYTES + COUNT_BYTES
}

/// The list of ended sessions that `key`'s entry belongs to.
pub fn ended_shard_of(key: u64) -> u32 {
    (key % u64::from(ENDED_SHARDS)) as u32
}

/// The CAS token of the ended-session signal: it changes after every change of
/// the lists (the hot path's one read; the value is empty).
pub fn ended_signal<S: SharedData>(shared: &S) -> Result<u32, StoreError> {
    match shared.get(ENDED_SIGNAL_KEY)? {
        Some((_, cas)) => Ok(cas),
        None => Err(StoreError::MissingKey(ENDED_SIGNAL_KEY.to_string())),
    }
}

/// The generations of the ended-session lists, as stored (one u32 per list),
/// read when [`ended_signal`] changed. Read one with [`ended_generation`].
pub fn ended_generations<S: SharedData>(shared: &S) -> Result<Vec<u8>, StoreError> {
    match shared.get(ENDED_GEN_KEY)? {
        Some((value, _)) => Ok(value),
        None => Err(StoreError::MissingKey(ENDED_GEN_KEY.to_string())),
    }
}

/// The generation of list `shard` in [`ended_generations`]'s value (0 when absent).
pub fn ended_generation(generations: &[u8], shard: u32) -> u32 {
    read_u32_at(generations, shard as usize * 4)
}

/// An ended-session list's entries as stored: (hunter key, end time with its
/// [`FLEET_END`] bit).
fn raw_ended_entries(value: &[u8]) -> impl Iterator<Item = (u64, u64)> + '_ {
    value
        .chunks_exact(ENDED_BYTES)
        .map(|entry| (read_u64_at(entry, 0), read_u64_at(entry, 8)))
}

fn ended_entries(value: &[u8]) -> impl Iterator<Item = (u64, u64)> + '_ {
    raw_ended_entries(value).map(|(key, at)| (key, at & !FLEET_END))
}

fn push_ended(out: &mut Vec<u8>, key: u64, raw_at: u64) {
    out.extend_from_slice(&key.to_le_bytes());
    out.extend_from_slice(&raw_at.to_le_bytes());
}

/// The entries (hunter key, ended at ms) of ended-session list `shard`, wherever
/// the end was recorded.
pub fn ended_sessions<S: SharedData>(
    shared: &S,
    shard: u32,
) -> Result<Vec<(u64, u64)>, StoreError> {
    let key = ended_key(shard);
    match shared.get(&key)? {
        Some((value, _)) => Ok(ended_entries(&value).collect()),
        None => Err(StoreError::MissingKey(key)),
    }
}

/// The ends this process recorded itself (not learnt from the fleet), every
/// list, as (hunter key, ended at ms): what the lease report shares.
#[inline(never)]
pub fn local_ends<S: SharedData>(shared: &S) -> Result<Vec<(u64, u64)>, StoreError> {
    let mut ends = Vec::new();
    for shard in 0..ENDED_SHARDS {
        let key = ended_key(shard);
        match shared.get(&key)? {
            Some((value, _)) => {
                ends.extend(raw_ended_entries(&value).filter(|(_, at)| at & FLEET_END == 0))
            }
            None => return Err(StoreError::MissingKey(key)),
        }
    }
    Ok(ends)
}

/// Bumps the generation of every list in `shards`, then rewrites the signal.
fn ended_lists_changed<S: SharedData>(shared: &S, shards: &[u32]) -> Result<(), StoreError> {
    cas_update(shared, ENDED_GEN_KEY, |current| {
        let mut next = current.unwrap_or_default().to_vec();
        next.resize(next.len().max(ENDED_SHARDS as usize * 4), 0);
        for &shard in shards {
            let at = shard as usize * 4;
            let generation = read_u32_at(&next, at).wrapping_add(1);
            if let Some(field) = next.get_mut(at..at + 4) {
                field.copy_from_slice(&generation.to_le_bytes());
            }
        }
        Ok(Some(next))
    })?;
    shared.set(ENDED_SIGNAL_KEY, b"", 0)?;
    Ok(())
}

/// How far past this process's clock a learnt end may lie: a later one (another
/// proxy's clock ahead) is recorded as ending this long from now, so it is
/// dropped in time like any other.
pub const MAX_FLEET_END_AHEAD_MS: u64 = 5_000;

/// What [`record_fleet_ends`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetEndsRecorded {
    /// Ends recorded (new, or later than the one remembered).
    pub recorded: usize,
    /// Ends left out because their list holds [`MAX_ENDED_PER_SHARD`] live ends.
    pub full: usize,
}

/// Records ends other proxies recorded (hunter key, ended at ms; from the lease
/// exchange) so that every worker refuses their tickets as it refuses this
/// process's own ended ones. An end already remembered at the same or a later
/// time, or older than `keep_ms` (its tickets have expired), is skipped; one
/// dated more than [`MAX_FLEET_END_AHEAD_MS`] ahead is moved back to that;
/// entries older than `keep_ms` are dropped meanwhile. One compare-and-swap per
/// list touched, then one generation bump for the lists changed (also when a
/// later list fails: the next answer's repeat then finds them recorded).
#[inline(never)]
pub fn record_fleet_ends<S: SharedData>(
    shared: &S,
    ends: &[(u64, u64)],
    now_ms: u64,
    keep_ms: u64,
) -> Result<FleetEndsRecorded, StoreError> {
    let mut outcome = FleetEndsRecorded::default();
    let mut changed = Vec::new();
    for shard in 0..ENDED_SHARDS {
        let latest = now_ms.saturating_add(MAX_FLEET_END_AHEAD_MS);
        let mine: Vec<(u64, u64)> = ends
            .iter()
            .filter(|(key, at)| {
                ended_shard_of(*key) == shard
                    && at & FLEET_END == 0
                    && at.saturating_add(keep_ms) >= now_ms
            })
            .map(|&(key, at)| (key, at.min(latest)))
            .collect();
        if mine.is_empty() {
            continue;
        }
        let list = ended_key(shard);
        let mut counts = FleetEndsRecorded::default();
        let written = cas_update(shared, &list, |current| {
            counts = FleetEndsRecorded::default();
            let mut live: Vec<(u64, u64)> = raw_ended_entries(current.unwrap_or_default())
                .filter(|(_, at)| (at & !FLEET_END).saturating_add(keep_ms) >= now_ms)
                .collect();
            let mut index: hashbrown::HashMap<u64, usize> =
                live.iter().enumerate().map(|(i, (k, _))| (*k, i)).collect();
            for &(key, at) in &mine {
                let full = live.len() >= MAX_ENDED_PER_SHARD;
                match index.get(&key).and_then(|&i| live.get_mut(i)) {
                    Some(entry) if entry.1 & !FLEET_END >= at => {}
                    Some(entry) => {
                        entry.1 = at | FLEET_END;
                        counts.recorded += 1;
                    }
                    None if full => counts.full += 1,
                    None => {
                        index.insert(key, live.len());
                        live.push((key, at | FLEET_END));
                        counts.recorded += 1;
                    }
                }
            }
            if counts.recorded == 0 {
                return Ok(None);
            }
            let mut next = Vec::with_capacity(live.len() * ENDED_BYTES);
            for (key, raw_at) in live {
                push_ended(&mut next, key, raw_at);
            }
            Ok(Some(next))
        });
        if let Err(e) = written {
            if !changed.is_empty() {
                ended_lists_changed(shared, &changed)?;
            }
            return Err(e);
        }
        outcome.recorded += counts.recorded;
        outcome.full += counts.full;
        if counts.recorded > 0 {
            changed.push(shard);
        }
    }
    if !changed.is_empty() {
        ended_lists_changed(shared, &changed)?;
    }
    Ok(outcome)
}

/// What [`end_session`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionEnded {
    /// A record was removed and its seat given back (false: this process held
    /// no record of the session, e.g. one whose ticket another proxy issued).
    pub freed: bool,
}

/// Ends `key`'s session at `now_ms`: records the end (entries older than `keep_ms`
/// are dropped meanwhile), then removes its record from `slot` (if the hunt has
/// one) and gives its seat back. Fails with [`StoreError::Full`] when the end
/// cannot be recorded; the session then stays (and expires as usual).
#[inline(never)]
pub fn end_session<S: SharedData>(
    shared: &S,
    slot: Option<SlotRef>,
    key: u64,
    now_ms: u64,
    keep_ms: u64,
) -> Result<SessionEnded, StoreError> {
    let shard = ended_shard_of(key);
    let list = ended_key(shard);
    cas_update(shared, &list, |current| {
        let mut next = Vec::with_capacity(current.map_or(0, <[u8]>::len) + ENDED_BYTES);
        let mut ended_ms = now_ms;
        let mut kept: Vec<(u64, u64)> = Vec::new();
        for (entry_key, raw_at) in raw_ended_entries(current.unwrap_or_default()) {
            let at = raw_at & !FLEET_END;
            if entry_key == key {
                ended_ms = ended_ms.max(at);
            } else if at.saturating_add(keep_ms) >= now_ms {
                kept.push((entry_key, raw_at));
            }
        }
        if kept.len() >= MAX_ENDED_PER_SHARD {
            // A full list makes room for this process's own end by forgetting
            // the oldest end learnt from the fleet, never one of its own.
            let oldest_learnt = kept
                .iter()
                .enumerate()
                .filter(|(_, (_, raw_at))| raw_at & FLEET_END != 0)
                .min_by_key(|(_, (_, raw_at))| raw_at & !FLEET_END)
                .map(|(i, _)| i);
            match oldest_learnt {
                Some(i) => {
                    kept.swap_remove(i);
                }
                None => return Err(StoreError::Full(format!("the ended-session list `{list}`"))),
            }
        }
        for (entry_key, raw_at) in kept {
            push_ended(&mut next, entry_key, raw_at);
        }
        // Recorded here: a local end (reported to the governor with leases).
        push_ended(&mut next, key, ended_ms);
        Ok(Some(next))
    })?;
    ended_lists_changed(shared, &[shard])?;
    let Some(slot) = slot else {
        return Ok(SessionEnded { freed: false });
    };
    let shard_key = slot.shard_key_of(key);
    let mut removed = false;
    let owned = cas_update(shared, &shard_key, |current| {
        let value = current.unwrap_or_default();
        removed = false;
        let Some(records) = shard_records(value, slot.tag) else {
            return Err(moved(&shard_key));
        };
        let Some(at) = find_record(records, key) else {
            return Ok(None);
        };
        removed = true;
        let mut next = Vec::with_capacity(value.len());
        next.extend_from_slice(&slot.tag.to_le_bytes());
        next.extend_from_slice(records.get(..at).unwrap_or_default());
        next.extend_from_slice(records.get(at + RECORD_BYTES..).unwrap_or_default());
        Ok(Some(next))
    });
    match owned {
        Ok(_) => {}
        // The slot went to another hunt: nothing of this one is left to free.
        Err(StoreError::SlotMoved(_)) => return Ok(SessionEnded { freed: false }),
        Err(e) => return Err(e),
    }
    if removed {
        release(shared, slot, 1, None).map_err(|e| unreleased(slot, 1, &e))?;
    }
    Ok(SessionEnded { freed: removed })
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use crate::shared_data::MemorySharedData;

    const NOW: u64 = 1_800_000_000_000;
    const EXP: u32 = 1_800_000_060;

    fn record(key: u64, expires_s: u32) -> Vec<u8> {
        [key.to_le_bytes().as_slice(), &expires_s.to_le_bytes()].concat()
    }

    /// A shard an earlier version appended to (out of key order, one hunter twice,
    /// both records counted) is put in order by the next sweep, which gives the
    /// duplicate's seat back; joins then find every record again. The process
    /// that version laid out (its `layout` key, one slot) keeps 16 shards per slot.
    #[test]
    fn a_shard_written_out_of_key_order_is_put_in_order_by_its_next_sweep() {
        let shared = MemorySharedData::default();
        shared
            .set(LEGACY_LAYOUT_KEY, &1u32.to_le_bytes(), 0)
            .unwrap();
        shared
            .set(&count_key(0), &Count::default().encode(), 0)
            .unwrap();
        for shard in 0..MIN_SHARDS {
            shared
                .set(&shard_key(0, shard), &0u64.to_le_bytes(), 0)
                .unwrap();
        }
        assert_eq!(prepare_layout(&shared, 1024, 0).unwrap(), MIN_SHARDS);
        let slot = SlotRef {
            slot: 0,
            tag: hunt_tag("h1"),
            shards: MIN_SHARDS,
        };
        // Hunters 48, 16 and 32 (all in shard 0), hunter 16 recorded twice.
        let legacy = [
            slot.tag.to_le_bytes().to_vec(),
            record(48, EXP),
            record(16, EXP),
            record(32, EXP + 5),
            record(16, EXP + 9),
        ]
        .concat();
        shared.set(&shard_key(0, 0), &legacy, 0).unwrap();
        let count = Count {
            tag: slot.tag,
            active: 4,
            next_expiry_s: 0,
            rejected: 0,
        };
        shared.set(&count_key(0), &count.encode(), 0).unwrap();

        assert_eq!(sweep_slot(&shared, slot, NOW).unwrap(), (1, 3));
        let (value, _) = shared.get(&shard_key(0, 0)).unwrap().unwrap();
        let expected = [
            slot.tag.to_le_bytes().to_vec(),
            record(16, EXP + 9),
            record(32, EXP + 5),
            record(48, EXP),
        ]
        .concat();
        assert_eq!(value, expected);
        for key in [16, 32, 48] {
            assert_eq!(
                admit(&shared, slot, key, EXP, NOW, Some(3)).unwrap(),
                AdmitOutcome::AlreadyActive,
                "hunter {key}"
            );
        }
        assert_eq!(active_count(&shared, slot).unwrap(), 3);
    }
}
