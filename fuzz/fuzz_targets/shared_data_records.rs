//! The records huntgate keeps in Envoy shared data (`huntgate_core::store`,
//! `throttle`'s feed metadata, `shared_data`): the layout, the hunt registry,
//! the per-slot count, the session shards, the leases and the process id.
//!
//! Two simulated workers run an arbitrary sequence of joins, renewals, ticks
//! (sweeps), rejected-join flushes, lease and process-id calls over one
//! `MemorySharedData`, interleaved with hostile writes: a chosen key
//! overwritten with arbitrary bytes, truncated, or bit-flipped (short, long
//! and corrupt values of every record). Checks:
//! - no operation panics on any stored bytes, corrupt ones included;
//! - until the first hostile write, every record decodes to what was encoded,
//!   checked against a model of the sessions each slot holds: the count is
//!   exactly the number of records, a join is admitted only under its limit
//!   and reports the count it made, `Full` reports the true count, a renewal
//!   of a held session takes no seat, a sweep removes exactly the expired
//!   records (the count's earliest-expiry hint never hides one), rejected
//!   joins add up, the registry read by a new worker names each slot's hunt,
//!   a slot holding sessions changes hands only to a listed hunt evicting an
//!   unlisted one, and the process id is the first candidate stored.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use huntgate_core::shared_data::{MemorySharedData, SharedData, StoreError};
use huntgate_core::store::{
    acquire_lease, active_count, add_rejected, admit, hunt_tag, hunter_key, prepare_layout,
    process_id, release_lease, slot_stats, sweep_slot, AdmitOutcome, RegistryCache, SlotLookup,
    SlotRef, MAX_SHARDS,
};
use huntgate_core::throttle::ThrottleCache;
use libfuzzer_sys::fuzz_target;

/// More hunts than slots, so slots are reused; `h0` is listed (protected).
const HUNTS: [&str; 6] = ["h0", "h1", "h2", "h3", "h4", "h5"];
const LEASES: [&str; 3] = ["sweeper", "fetcher", "registrar"];
const START_MS: u64 = 1_700_000_000_000;

#[derive(Debug, Arbitrary)]
enum Op {
    /// A join (with a limit) or a renewal (`limit: None`) on a worker.
    Join {
        worker: bool,
        hunt: u8,
        hunter: u8,
        ttl_s: u16,
        limit: Option<u8>,
    },
    /// The clock moves; the worker sweeps every slot it knows.
    Tick {
        worker: bool,
        advance_ms: u32,
    },
    /// A worker flushes rejected joins.
    Rejected {
        worker: bool,
        hunt: u8,
        n: u8,
    },
    Lease {
        name: u8,
        owner: u8,
        duration_ms: u16,
        release: bool,
    },
    ProcessId {
        candidate: String,
    },
    /// Hostile writes.
    Overwrite {
        key: u16,
        bytes: Vec<u8>,
    },
    Truncate {
        key: u16,
        len: u8,
    },
    Flip {
        key: u16,
        at: u16,
        mask: u8,
    },
}

#[derive(Debug, Arbitrary)]
struct Input {
    slots: u8,
    ops: Vec<Op>,
}

/// What one slot holds, in the model.
#[derive(Debug, Default, Clone)]
struct ModelSlot {
    hunt: String,
    /// hunter key → expiry second, records not swept yet.
    records: BTreeMap<u64, u32>,
    rejected: u32,
}

fn keys(slots: u32) -> Vec<String> {
    let mut keys: Vec<String> = [
        "layout",
        "slots",
        "registry",
        "registry_gen",
        "process_id",
        "throttle",
        "throttle_meta",
    ]
    .iter()
    .map(|k| format!("huntgate/v1/{k}"))
    .collect();
    keys.extend(LEASES.iter().map(|l| format!("huntgate/v1/lease/{l}")));
    for slot in 0..slots {
        keys.push(format!("huntgate/v1/count/{slot}"));
        // At most 5 slots: one batch, each with the most shards.
        for shard in 0..MAX_SHARDS {
            keys.push(format!("huntgate/v1/shard/{slot}/{shard}"));
        }
    }
    keys
}

fn hunt_name(index: u8) -> &'static str {
    HUNTS
        .get(usize::from(index) % HUNTS.len())
        .copied()
        .unwrap_or("h0")
}

fn live(expires_s: u32, now_ms: u64) -> bool {
    u64::from(expires_s) * 1000 > now_ms
}

fn listed(hunt: &str) -> bool {
    hunt == "h0"
}

struct Run {
    shared: MemorySharedData,
    workers: [RegistryCache; 2],
    model: Vec<Option<ModelSlot>>,
    keys: Vec<String>,
    now_ms: u64,
    /// No hostile write yet: the model must hold.
    clean: bool,
    /// The process id stored so far (empty: none yet).
    process_id: String,
}

impl Run {
    fn worker(&mut self, second: bool) -> &mut RegistryCache {
        let [a, b] = &mut self.workers;
        if second {
            b
        } else {
            a
        }
    }

    fn slot_of(&mut self, worker: bool, hunt: &str) -> Option<SlotRef> {
        let cap = u32::try_from(self.model.len()).unwrap_or(1);
        let owner = u64::from(worker) + 1;
        let now_ms = self.now_ms;
        let listed_fn = listed;
        let lookup = {
            let shared = &self.shared;
            let [first, second] = &mut self.workers;
            let cache = if worker { second } else { first };
            cache.resolve(shared, hunt, cap, &listed_fn, now_ms, owner)
        };
        match lookup {
            Ok(SlotLookup::Slot(slot)) => {
                self.sync();
                Some(slot)
            }
            Ok(SlotLookup::Untracked) => None,
            Err(e) => {
                assert!(!self.clean || matches!(e, StoreError::SlotMoved(_)), "{e}");
                None
            }
        }
    }

    fn model_slot(&mut self, slot: SlotRef, hunt: &str) -> Option<&mut ModelSlot> {
        self.model
            .get_mut(slot.slot as usize)
            .and_then(Option::as_mut)
            .filter(|m| m.hunt == hunt)
    }

    fn op(&mut self, op: &Op) {
        match op {
            Op::Join {
                worker,
                hunt,
                hunter,
                ttl_s,
                limit,
            } => {
                let hunt = hunt_name(*hunt);
                let Some(slot) = self.slot_of(*worker, hunt) else {
                    return;
                };
                let key = hunter_key(hunt, &format!("hunter-{hunter}"));
                let expires_s =
                    u32::try_from(self.now_ms / 1000 + 1 + u64::from(*ttl_s % 600)).unwrap_or(0);
                let limit = limit.map(u32::from);
                let outcome = admit(&self.shared, slot, key, expires_s, self.now_ms, limit);
                if let Err(StoreError::SlotMoved(_)) = &outcome {
                    self.worker(*worker).forget(hunt);
                }
                if !self.clean {
                    return;
                }
                let now_ms = self.now_ms;
                let Ok(outcome) = outcome else {
                    assert!(
                        matches!(outcome, Err(StoreError::SlotMoved(_))),
                        "{outcome:?}"
                    );
                    return;
                };
                // Success: the slot is this hunt's (a fresh slot starts empty).
                let index = slot.slot as usize;
                let fresh = self
                    .model
                    .get(index)
                    .and_then(Option::as_ref)
                    .is_none_or(|m| m.hunt != hunt);
                if fresh {
                    self.take_over(index, hunt);
                }
                let Some(model) = self.model_slot(slot, hunt) else {
                    panic!("slot {index} not in the model");
                };
                let count = u32::try_from(model.records.len()).unwrap_or(u32::MAX);
                let held = model.records.get(&key).copied();
                match outcome {
                    AdmitOutcome::Admitted { active } => {
                        assert!(held.is_none(), "hunter admitted twice");
                        assert_eq!(active, count + 1);
                        assert!(limit.is_none_or(|l| active <= l), "past the limit");
                        model.records.insert(key, expires_s);
                    }
                    AdmitOutcome::AlreadyActive => {
                        let held = held.unwrap_or_else(|| panic!("no session held"));
                        model.records.insert(key, held.max(expires_s));
                    }
                    AdmitOutcome::Full { active } => {
                        assert_eq!(active, count);
                        assert!(limit.is_some_and(|l| active >= l));
                        assert!(
                            held.is_none_or(|e| !live(e, now_ms)),
                            "live session refused"
                        );
                    }
                }
            }
            Op::Tick { worker, advance_ms } => {
                self.now_ms += u64::from(*advance_ms % 700_000);
                let now_ms = self.now_ms;
                let [first, second] = &mut self.workers;
                let cache = if *worker { second } else { first };
                let _ = cache.refresh(&self.shared);
                let slots: Vec<(String, SlotRef)> = self
                    .worker(*worker)
                    .hunts()
                    .map(|(h, s)| (h.to_string(), s))
                    .collect();
                for (hunt, slot) in slots {
                    let swept = sweep_slot(&self.shared, slot, now_ms);
                    if !self.clean {
                        continue;
                    }
                    let (removed, left) = swept.unwrap_or_else(|e| panic!("sweep: {e}"));
                    match self.model_slot(slot, &hunt) {
                        Some(model) => {
                            let before = model.records.len();
                            model.records.retain(|_, e| live(*e, now_ms));
                            let gone = before - model.records.len();
                            assert_eq!(removed as usize, gone, "sweep of {hunt}");
                            assert_eq!(left as usize, model.records.len());
                        }
                        None => assert_eq!((removed, left), (0, 0), "{hunt} holds nothing"),
                    }
                }
                let mut cache = ThrottleCache::default();
                let _ = cache.refresh(&self.shared);
            }
            Op::Rejected { worker, hunt, n } => {
                let hunt = hunt_name(*hunt);
                let Some(slot) = self.slot_of(*worker, hunt) else {
                    return;
                };
                let flushed = add_rejected(&self.shared, slot, u32::from(*n));
                if self.clean {
                    assert!(flushed.is_ok(), "{flushed:?}");
                    if let Some(model) = self.model_slot(slot, hunt) {
                        model.rejected = model.rejected.wrapping_add(u32::from(*n));
                    }
                }
            }
            Op::Lease {
                name,
                owner,
                duration_ms,
                release,
            } => {
                let name = LEASES
                    .get(usize::from(*name) % LEASES.len())
                    .copied()
                    .unwrap_or("sweeper");
                let owner = u64::from(*owner % 4) + 1;
                let took = acquire_lease(
                    &self.shared,
                    name,
                    owner,
                    self.now_ms,
                    u64::from(*duration_ms),
                );
                let again = acquire_lease(&self.shared, name, owner, self.now_ms, 1);
                if self.clean {
                    // Whoever holds it renews it at once.
                    if took == Ok(true) {
                        assert_eq!(again, Ok(true));
                    }
                }
                if *release {
                    let _ = release_lease(&self.shared, name, owner);
                }
            }
            Op::ProcessId { candidate } => {
                let id = process_id(&self.shared, candidate);
                if self.clean {
                    let id = id.unwrap_or_else(|e| panic!("process id: {e}"));
                    // The first non-empty candidate stored wins.
                    if self.process_id.is_empty() {
                        self.process_id = candidate.clone();
                    }
                    assert_eq!(id, self.process_id);
                }
            }
            Op::Overwrite { key, bytes } => {
                let key = self.key(*key);
                let _ = self.shared.set(&key, bytes, 0);
                self.clean = false;
            }
            Op::Truncate { key, len } => {
                let key = self.key(*key);
                if let Ok(Some((mut value, _))) = self.shared.get(&key) {
                    value.truncate(usize::from(*len));
                    let _ = self.shared.set(&key, &value, 0);
                }
                self.clean = false;
            }
            Op::Flip { key, at, mask } => {
                let key = self.key(*key);
                if let Ok(Some((mut value, _))) = self.shared.get(&key) {
                    let len = value.len().max(1);
                    if let Some(b) = value.get_mut(usize::from(*at) % len) {
                        *b ^= mask;
                    }
                    let _ = self.shared.set(&key, &value, 0);
                }
                self.clean = false;
            }
        }
    }

    fn key(&self, index: u16) -> String {
        let at = usize::from(index) % self.keys.len().max(1);
        self.keys.get(at).cloned().unwrap_or_default()
    }

    /// `hunt` now owns slot `index` (it was empty, or a reuse took it over).
    fn take_over(&mut self, index: usize, hunt: &str) {
        if let Some(slot) = self.model.get_mut(index) {
            // A reuse tags the count with the new hunt; a fresh slot keeps tag 0.
            if let Some(old) = slot.as_ref() {
                assert!(
                    old.records.is_empty() || (listed(hunt) && !listed(&old.hunt)),
                    "slot {index} of {} with {} sessions given to {hunt}",
                    old.hunt,
                    old.records.len()
                );
            }
            *slot = Some(ModelSlot {
                hunt: hunt.to_string(),
                ..ModelSlot::default()
            });
        }
    }

    /// Follows the registry as a new worker reads it: a slot renamed by a reuse
    /// starts over in the model (checking that the reuse was allowed).
    fn sync(&mut self) {
        if !self.clean {
            return;
        }
        let mut fresh = RegistryCache::default();
        if let Err(e) = fresh.refresh(&self.shared) {
            panic!("registry: {e}");
        }
        let named: BTreeMap<u32, String> = fresh
            .hunts()
            .map(|(h, s)| (s.slot, h.to_string()))
            .collect();
        assert!(fresh.len() as usize <= self.model.len());
        for index in 0..self.model.len() {
            let slot = u32::try_from(index).unwrap_or(u32::MAX);
            let model_hunt = self
                .model
                .get(index)
                .and_then(Option::as_ref)
                .map(|m| m.hunt.clone());
            match named.get(&slot) {
                Some(hunt) if model_hunt.as_ref() != Some(hunt) => self.take_over(index, hunt),
                Some(_) => {}
                None => {
                    if let Some(Some(old)) = self.model.get(index) {
                        assert!(old.records.is_empty(), "slot {index} lost its hunt");
                    }
                }
            }
        }
    }

    /// A new worker's view of the registry and every count match the model.
    fn check(&mut self) {
        if !self.clean {
            return;
        }
        self.sync();
        for (index, model) in self.model.iter().enumerate() {
            let Some(model) = model else {
                continue;
            };
            let slot = SlotRef {
                slot: u32::try_from(index).unwrap_or(u32::MAX),
                tag: hunt_tag(&model.hunt),
                shards: MAX_SHARDS,
            };
            let stats = slot_stats(&self.shared, slot);
            let stats = stats.unwrap_or_else(|e| panic!("stats: {e}"));
            assert_eq!(
                (stats.0 as usize, stats.1),
                (model.records.len(), model.rejected),
                "slot {index} ({})",
                model.hunt
            );
            assert_eq!(active_count(&self.shared, slot), Ok(stats.0));
        }
    }
}

fuzz_target!(|input: Input| {
    let slots = u32::from(input.slots % 4) + 1;
    let shared = MemorySharedData::default();
    if let Err(e) = prepare_layout(&shared, slots, 0) {
        panic!("layout: {e}");
    }
    let mut run = Run {
        shared,
        workers: [RegistryCache::default(), RegistryCache::default()],
        model: vec![None; slots as usize],
        keys: keys(slots),
        now_ms: START_MS,
        clean: true,
        process_id: String::new(),
    };
    for op in input.ops.iter().take(256) {
        run.op(op);
        run.check();
    }
    // Whatever the bytes, layout preparation and every read still return.
    let _ = prepare_layout(&run.shared, slots + 1, 0);
    let mut cache = RegistryCache::default();
    let _ = cache.refresh(&run.shared);
});
