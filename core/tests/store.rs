//! The shared session store: exact counting under concurrency, expiry, registry cap, lease.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use std::cell::Cell;

#[path = "support/counted.rs"]
mod counted;
use counted::Counted;

use huntgate_core::shared_data::{MemorySharedData, SetOutcome, SharedData, StoreError};
use huntgate_core::store::{
    acquire_lease, active_count, admit, grow_layout, hunt_tag, hunter_key, layout, prepare_layout,
    shards_for, sweep_slot, AdmitOutcome, RegistryCache, SlotLookup, SlotRef, MAX_SHARDS,
    MIN_SHARDS, SLOT_BATCH,
};

/// Shards per slot of the small stores below (every `max_tracked_hunts` ≤ 1,024).
const SHARDS: u32 = MAX_SHARDS;

const NOW: u64 = 1_800_000_000_000;
const EXP: u32 = 1_800_000_060; // NOW + 60 s

/// Hunt h1 in slot 0.
fn h1() -> SlotRef {
    SlotRef {
        slot: 0,
        tag: hunt_tag("h1"),
        shards: SHARDS,
    }
}

fn slot_of(lookup: SlotLookup) -> u32 {
    match lookup {
        SlotLookup::Slot(slot) => slot.slot,
        SlotLookup::Untracked => panic!("untracked"),
    }
}

/// Nothing is listed.
fn none(_: &str) -> bool {
    false
}

fn store(slots: u32) -> MemorySharedData {
    let shared = MemorySharedData::default();
    prepare_layout(&shared, slots, 0).unwrap();
    shared
}

#[test]
fn admits_exactly_up_to_the_limit() {
    let s = store(1);
    for i in 0..5u64 {
        assert_eq!(
            admit(&s, h1(), i, EXP, NOW, Some(5)).unwrap(),
            AdmitOutcome::Admitted {
                active: i as u32 + 1
            }
        );
    }
    assert_eq!(
        admit(&s, h1(), 99, EXP, NOW, Some(5)).unwrap(),
        AdmitOutcome::Full { active: 5 }
    );
    assert_eq!(active_count(&s, h1()).unwrap(), 5);
}

#[test]
fn a_live_hunter_joining_again_takes_no_second_slot_even_when_full() {
    let s = store(1);
    admit(&s, h1(), 1, EXP, NOW, Some(1)).unwrap();
    assert_eq!(
        admit(&s, h1(), 1, EXP + 5, NOW, Some(1)).unwrap(),
        AdmitOutcome::AlreadyActive
    );
    assert_eq!(active_count(&s, h1()).unwrap(), 1);
}

#[test]
fn renewal_without_limit_recreates_a_lost_session() {
    let s = store(1);
    admit(&s, h1(), 1, EXP, NOW, Some(1)).unwrap();
    assert_eq!(
        admit(&s, h1(), 2, EXP, NOW, None).unwrap(),
        AdmitOutcome::Admitted { active: 2 }
    );
}

#[test]
fn sweep_frees_expired_slots_and_keeps_live_ones() {
    let s = store(1);
    admit(&s, h1(), 1, EXP, NOW, Some(2)).unwrap();
    admit(&s, h1(), 2, EXP + 30, NOW, Some(2)).unwrap();
    assert_eq!(sweep_slot(&s, h1(), NOW + 59_999).unwrap(), (0, 2));
    assert_eq!(sweep_slot(&s, h1(), u64::from(EXP) * 1000).unwrap(), (1, 1));
    assert_eq!(
        admit(&s, h1(), 3, EXP + 60, NOW + 61_000, Some(2)).unwrap(),
        AdmitOutcome::Admitted { active: 2 }
    );
}

#[test]
fn an_expired_but_unswept_session_is_a_new_join() {
    let s = store(1);
    admit(&s, h1(), 1, EXP, NOW, Some(1)).unwrap();
    // Past expiry, not yet swept: the hunter comes back while the hunt is full.
    let later = u64::from(EXP) * 1000 + 10;
    assert_eq!(
        admit(&s, h1(), 1, EXP + 60, later, Some(1)).unwrap(),
        AdmitOutcome::Full { active: 1 }
    );
    assert_eq!(
        admit(&s, h1(), 1, EXP + 60, later, Some(2)).unwrap(),
        AdmitOutcome::AlreadyActive
    );
    assert_eq!(active_count(&s, h1()).unwrap(), 1);
}

#[test]
fn registry_assigns_stable_slots_up_to_the_cap() {
    let s = store(2);
    let mut a = RegistryCache::default();
    let mut b = RegistryCache::default();
    let resolve =
        |cache: &mut RegistryCache, hunt: &str| cache.resolve(&s, hunt, 2, &none, NOW, 1).unwrap();
    assert_eq!(slot_of(resolve(&mut a, "h1")), 0);
    assert_eq!(slot_of(resolve(&mut b, "h2")), 1);
    assert_eq!(slot_of(resolve(&mut b, "h1")), 0);
    // Both hunts hold sessions: no slot can be reused.
    admit(&s, h1(), 1, EXP, NOW, None).unwrap();
    let h2 = SlotRef {
        slot: 1,
        tag: hunt_tag("h2"),
        shards: SHARDS,
    };
    admit(&s, h2, 1, EXP, NOW, None).unwrap();
    assert_eq!(resolve(&mut a, "h3"), SlotLookup::Untracked);
    assert_eq!(slot_of(resolve(&mut a, "h2")), 1);
}

/// A worker registering hunt after hunt (a configuration listing many) keeps
/// its cache whole as it goes: every hunt it registered is in its view of the
/// registry, as another worker reading the registry afresh sees it.
#[test]
fn a_worker_registering_many_hunts_sees_the_registry_others_read() {
    let s = MemorySharedData::default();
    prepare_layout(&s, 400, 0).unwrap();
    let mut a = RegistryCache::default();
    let mut b = RegistryCache::default();
    for i in 0..300u32 {
        let lookup = a.resolve(&s, &format!("h{i}"), 400, &none, NOW, 1).unwrap();
        assert_eq!(slot_of(lookup), i + (i + 49) / 100);
        if i % 100 == 50 {
            // Another worker registers one in between.
            b.resolve(&s, &format!("x{i}"), 400, &none, NOW, 2).unwrap();
        }
    }
    let view = |cache: &RegistryCache| -> Vec<(String, u32)> {
        cache
            .hunts()
            .map(|(h, r)| (h.to_string(), r.slot))
            .collect()
    };
    let mut fresh = RegistryCache::default();
    fresh.refresh(&s).unwrap();
    let (seen, expected) = (view(&a), view(&fresh));
    assert_eq!(expected.len(), 303);
    let missing: Vec<_> = expected.iter().filter(|h| !seen.contains(h)).collect();
    assert!(
        seen == expected,
        "missing from the registering worker's view: {missing:?}"
    );
}

#[test]
fn hunter_keys_differ_per_hunt_and_hunter() {
    assert_ne!(hunter_key("h1", "a"), hunter_key("h2", "a"));
    assert_ne!(hunter_key("h1", "a"), hunter_key("h1", "b"));
    assert_eq!(hunter_key("h1", "a"), hunter_key("h1", "a"));
}

#[test]
fn one_lease_holder_until_it_lapses() {
    let s = store(1);
    assert!(acquire_lease(&s, "sweeper", 1, NOW, 3_000).unwrap());
    assert!(!acquire_lease(&s, "sweeper", 2, NOW + 1_000, 3_000).unwrap());
    assert!(acquire_lease(&s, "sweeper", 1, NOW + 1_000, 3_000).unwrap());
    assert!(acquire_lease(&s, "sweeper", 2, NOW + 4_000, 3_000).unwrap());
    assert!(!acquire_lease(&s, "sweeper", 1, NOW + 4_500, 3_000).unwrap());
}

#[test]
fn layout_is_prepared_once_and_extends_when_the_cap_grows() {
    let s = store(2);
    let keys = s.key_count();
    prepare_layout(&s, 2, 0).unwrap();
    assert_eq!(s.key_count(), keys);
    prepare_layout(&s, 3, 0).unwrap();
    // Per slot: its count, its shards and its waiting room.
    assert_eq!(s.key_count(), keys + 2 + SHARDS as usize);
}

#[test]
fn shards_per_slot_follow_max_tracked_hunts_within_the_key_budget() {
    assert_eq!(shards_for(1), MAX_SHARDS);
    assert_eq!(shards_for(1_024), 128);
    assert_eq!(shards_for(2_048), 64);
    assert_eq!(shards_for(3_000), 32);
    assert_eq!(shards_for(65_536), MIN_SHARDS);
}

/// 1,024 slots are not all created at start: a batch is, and the next one as the
/// registry nears it, so the shard keys follow the hunts registered.
#[test]
fn slots_are_created_a_batch_at_a_time_as_hunts_register() {
    let s = store(1_024);
    let at_start = s.key_count();
    assert_eq!(layout(&s).unwrap().prepared, SLOT_BATCH);
    // The 1,024 waiting-room keys, the process keys and one batch of slots.
    assert!(
        at_start < 1_024 + 64 + (SLOT_BATCH as usize) * (1 + SHARDS as usize),
        "{at_start} keys"
    );
    let mut cache = RegistryCache::default();
    for i in 0..100u32 {
        let hunt = format!("h{i}");
        assert_eq!(
            slot_of(cache.resolve(&s, &hunt, 1_024, &none, NOW, 1).unwrap()),
            i
        );
        let slot = cache.lookup(&hunt).unwrap();
        assert_eq!(slot.shards, SHARDS);
        admit(&s, slot, u64::from(i), EXP, NOW, Some(1)).unwrap();
    }
    let prepared = layout(&s).unwrap().prepared;
    assert!((100..=100 + SLOT_BATCH).contains(&prepared), "{prepared}");
    for i in 0..100u32 {
        let slot = cache.lookup(&format!("h{i}")).unwrap();
        assert_eq!(active_count(&s, slot).unwrap(), 1, "hunt h{i}");
    }
}

/// While another worker holds the claim to create the next batch, a registration
/// past the prepared slots is refused as contention (never admitted uncounted);
/// once the claim lapses, the next registration creates the batch.
#[test]
fn a_registration_waits_for_the_worker_creating_the_next_batch() {
    let s = store(64);
    let mut cache = RegistryCache::default();
    for i in 0..SLOT_BATCH {
        cache
            .resolve(&s, &format!("h{i}"), SLOT_BATCH, &none, NOW, 1)
            .unwrap();
    }
    assert_eq!(layout(&s).unwrap().prepared, SLOT_BATCH);
    // A worker claims the next batch and stops (its claim lasts 5 s).
    let (value, cas) = s.get("huntgate/v1/slots").unwrap().unwrap();
    let mut claimed = value.clone();
    claimed[8..16].copy_from_slice(&(NOW + 5_000).to_le_bytes());
    s.set("huntgate/v1/slots", &claimed, cas).unwrap();
    assert!(matches!(
        cache.resolve(&s, "late", 64, &none, NOW, 1),
        Err(StoreError::Contention(_))
    ));
    assert_eq!(
        grow_layout(&s, 64, NOW + 1_000).unwrap().prepared,
        SLOT_BATCH
    );
    assert_eq!(
        slot_of(
            cache
                .resolve(&s, "late", 64, &none, NOW + 5_000, 1)
                .unwrap()
        ),
        SLOT_BATCH
    );
    assert_eq!(layout(&s).unwrap().prepared, 64);
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn concurrent_joins_on_many_threads_never_exceed_the_limit() {
    use std::sync::{Arc, Barrier};
    let s = Arc::new(store(1));
    let threads = 8u64;
    let per_thread = 50u64;
    let barrier = Arc::new(Barrier::new(threads as usize + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let s = Arc::clone(&s);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let mut admitted = 0;
                for i in 0..per_thread {
                    // Every thread also re-joins a hunter another thread may own, and sweeps.
                    let own = hunter_key("h1", &format!("hunter-{t}-{i}"));
                    let shared_with_thread_0 = hunter_key("h1", &format!("hunter-0-{i}"));
                    for key in [own, shared_with_thread_0] {
                        if let AdmitOutcome::Admitted { .. } =
                            admit(&*s, h1(), key, EXP, NOW, Some(50)).unwrap()
                        {
                            admitted += 1;
                        }
                    }
                    sweep_slot(&*s, h1(), NOW).unwrap();
                }
                admitted
            })
        })
        .collect();
    barrier.wait();
    let admitted: u32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(admitted, 50);
    assert_eq!(active_count(&*s, h1()).unwrap(), 50);
    // Everything expires: the count returns to zero.
    let (expired, left) = sweep_slot(&*s, h1(), u64::from(EXP) * 1000).unwrap();
    assert_eq!((expired, left), (50, 0));
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn concurrent_slot_reuse_never_leaks_a_count_into_another_hunt() {
    use std::sync::{Arc, Barrier};
    // 4 hunts over 2 slots; every thread joins, sweeps everything away now and
    // then (so slots get reused), and resolves with a stale cache.
    let s = Arc::new(store(2));
    let threads = 4u64;
    let barrier = Arc::new(Barrier::new(threads as usize));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let s = Arc::clone(&s);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut cache = RegistryCache::default();
                barrier.wait();
                for i in 0..400u64 {
                    let hunt = format!("h{}", (i + t) % 4);
                    let now = NOW + i * 10;
                    let Ok(SlotLookup::Slot(slot)) =
                        cache.resolve(&*s, &hunt, 2, &none, now, t + 1)
                    else {
                        continue;
                    };
                    let key = hunter_key(&hunt, &format!("{t}-{i}"));
                    // Short sessions: they expire within a few iterations.
                    let expires = (now / 1000) as u32 + 1;
                    match admit(&*s, slot, key, expires, now, Some(3)) {
                        Err(huntgate_core::shared_data::StoreError::SlotMoved(_)) => {
                            cache.forget(&hunt)
                        }
                        other => {
                            other.unwrap();
                        }
                    }
                    if i % 7 == 0 {
                        for (_, slot) in cache.hunts().collect::<Vec<_>>() {
                            sweep_slot(&*s, slot, now + 5_000).unwrap();
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    // Every slot's count equals the records of its own hunt: sweeping them all
    // away leaves exactly zero (a leaked count would stay; a lost one would underflow).
    let mut cache = RegistryCache::default();
    cache.refresh(&*s).unwrap();
    for (hunt, slot) in cache.hunts().collect::<Vec<_>>() {
        let before = active_count(&*s, slot).unwrap();
        assert!(before <= 3, "{hunt}: {before} over the limit");
        let (removed, left) = sweep_slot(&*s, slot, u64::MAX / 2).unwrap();
        assert_eq!((removed, left), (before, 0), "{hunt}");
    }
}

#[test]
fn a_quiet_slot_is_swept_by_reading_its_count_only() {
    let s = store(1);
    admit(&s, h1(), 1, EXP, NOW, Some(5)).unwrap();
    // The first sweep learns the earliest expiry...
    assert_eq!(sweep_slot(&s, h1(), NOW).unwrap(), (0, 1));
    // ...after which a shard that a sweep would have to rewrite is never read before it.
    assert_eq!(sweep_slot(&s, h1(), NOW + 1_000).unwrap(), (0, 1));
    assert_eq!(sweep_slot(&s, h1(), u64::from(EXP) * 1000).unwrap(), (1, 0));
}

/// Shared data that runs `hook` once, just before the `nth` write of a key of
/// slot 0's shards (`huntgate/v1/shard/0/…`): a worker stalled there while others go on.
struct Stalled<'a> {
    inner: &'a MemorySharedData,
    nth: Cell<u32>,
    hook: std::cell::RefCell<Option<Box<dyn FnOnce() + 'a>>>,
}

impl<'a> Stalled<'a> {
    fn new(inner: &'a MemorySharedData, nth: u32, hook: impl FnOnce() + 'a) -> Self {
        Self {
            inner,
            nth: Cell::new(nth),
            hook: std::cell::RefCell::new(Some(Box::new(hook))),
        }
    }
}

impl SharedData for Stalled<'_> {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        self.inner.get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<SetOutcome, StoreError> {
        if key.starts_with("huntgate/v1/shard/0/") {
            let left = self.nth.get();
            self.nth.set(left.saturating_sub(1));
            if left == 1 {
                let hook = self.hook.borrow_mut().take();
                if let Some(hook) = hook {
                    hook();
                }
            }
        }
        self.inner.set(key, value, cas)
    }
}

/// Two hunts registered in two slots, neither holding a session.
fn two_idle_hunts() -> MemorySharedData {
    let s = store(2);
    let mut cache = RegistryCache::default();
    for hunt in ["a", "b"] {
        cache.resolve(&s, hunt, 2, &none, NOW, 9).unwrap();
    }
    s
}

/// Every hunt the registry lists counts in its slot, in every shard of it: one
/// hunter per shard joins and is counted, none fails with `SlotMoved`.
fn assert_registry_matches_counts(s: &MemorySharedData) {
    let mut cache = RegistryCache::default();
    cache.refresh(s).unwrap();
    let hunts: Vec<(String, SlotRef)> = cache.hunts().map(|(h, r)| (h.to_string(), r)).collect();
    for (hunt, slot) in hunts {
        let before = active_count(s, slot).unwrap();
        // Keys no earlier join used (those are below 1,000).
        for key in (0..u64::from(SHARDS)).map(|k| 1_000 * u64::from(SHARDS) + k) {
            let outcome = admit(s, slot, key, EXP, NOW, Some(u32::MAX));
            assert!(
                matches!(outcome, Ok(AdmitOutcome::Admitted { .. })),
                "{hunt}: {outcome:?}"
            );
        }
        assert_eq!(active_count(s, slot).unwrap(), before + SHARDS, "{hunt}");
        let (removed, left) = sweep_slot(s, slot, u64::MAX / 2).unwrap();
        assert_eq!((removed, left), (before + SHARDS, 0), "{hunt}");
    }
}

/// A registrar stalled past its lease while emptying a slot's shards, and a second
/// one taking that same slot meanwhile: the first stops at its next write and finds
/// another slot, so the registry, the counts and the shards agree afterwards.
#[test]
fn a_registrar_whose_lease_lapsed_stops_at_its_next_write() {
    let s = two_idle_hunts();
    let second = std::cell::RefCell::new(None);
    let stalled = Stalled::new(&s, 5, || {
        // 5 s later (the first registrar's 1 s lease has lapsed), another worker.
        // It admits a hunter at once, so its slot is no idle slot to take back.
        let mut cache = RegistryCache::default();
        let lookup = cache.resolve(&s, "z", 2, &none, NOW + 5_000, 2);
        if let Ok(SlotLookup::Slot(z)) = lookup {
            admit(&s, z, 1, EXP, NOW + 5_000, Some(10)).unwrap();
        }
        *second.borrow_mut() = Some(lookup);
    });
    let mut cache = RegistryCache::default();
    let first = cache.resolve(&stalled, "y", 2, &none, NOW, 1).unwrap();
    let second = second.take().expect("the second registrar ran").unwrap();
    // The second took slot 0 (empty, locked by the first); the first then took slot 1.
    assert_eq!((slot_of(second), slot_of(first)), (0, 1));
    assert_registry_matches_counts(&s);
}

/// A worker that still knows a hunt's slot from an earlier reassignment joins while
/// the slot is being given back to that hunt: it takes no seat (the count is locked
/// until every shard is empty), so nothing is counted that the emptying wipes away.
#[test]
fn no_join_takes_a_seat_while_its_slot_is_being_reassigned() {
    let s = two_idle_hunts();
    let y = SlotRef {
        slot: 0,
        tag: hunt_tag("y"),
        shards: SHARDS,
    };
    let during = std::cell::RefCell::new(None);
    let stalled = Stalled::new(&s, 3, || {
        // Shard 100 of slot 0 was never written: the join's record would land there.
        *during.borrow_mut() = Some(admit(&s, y, 100, EXP, NOW, Some(10)));
    });
    let mut cache = RegistryCache::default();
    let lookup = cache.resolve(&stalled, "y", 2, &none, NOW, 1).unwrap();
    assert_eq!(slot_of(lookup), 0);
    let during = during.take().expect("the join ran");
    assert!(
        matches!(during, Err(StoreError::SlotMoved(_))),
        "{during:?}"
    );
    assert_eq!(active_count(&s, y).unwrap(), 0);
    assert_registry_matches_counts(&s);
}

/// A join into a hunt with room is one count update and one shard update; into a
/// full hunt, one count read and one shard read; a renewal, one shard update.
/// The bytes are the count and the hunter's shard (active / SHARDS records).
#[test]
fn a_join_costs_one_count_update_and_one_shard_update() {
    let shared = MemorySharedData::default();
    let s = Counted::new(&shared);
    prepare_layout(&s, 1, 0).unwrap();
    let active = 3_200u64;
    for key in 0..active {
        admit(&s, h1(), key * 7_919, EXP, NOW, None).unwrap();
    }
    let shard_bytes = 8 + 12 * active as usize / SHARDS as usize;
    s.take();
    assert_eq!(
        admit(&s, h1(), 5, EXP, NOW, Some(10_000)).unwrap(),
        AdmitOutcome::Admitted { active: 3_201 }
    );
    let (gets, sets, bytes) = s.take();
    assert_eq!((gets, sets), (2, 2));
    assert!(bytes <= 2 * (20 + shard_bytes + 12 * 4), "{bytes} bytes");

    assert_eq!(
        admit(&s, h1(), 6, EXP, NOW, Some(3_201)).unwrap(),
        AdmitOutcome::Full { active: 3_201 }
    );
    let (gets, sets, _) = s.take();
    assert_eq!((gets, sets), (2, 0));
    assert_eq!(
        admit(&s, h1(), 5, EXP + 10, NOW, None).unwrap(),
        AdmitOutcome::AlreadyActive
    );
    let (gets, sets, _) = s.take();
    assert_eq!((gets, sets), (1, 1));
}

/// Hunters joined in any order are each found again: re-joins take no second seat.
#[test]
fn every_hunter_joined_in_any_order_is_found_again() {
    let s = store(1);
    let keys: Vec<u64> = (0..2_000u64)
        .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .collect();
    for key in &keys {
        admit(&s, h1(), *key, EXP, NOW, Some(2_000)).unwrap();
    }
    for key in keys.iter().rev() {
        assert_eq!(
            admit(&s, h1(), *key, EXP, NOW, Some(2_000)).unwrap(),
            AdmitOutcome::AlreadyActive
        );
    }
    assert_eq!(active_count(&s, h1()).unwrap(), 2_000);
}
