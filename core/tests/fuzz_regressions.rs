//! Regressions found by the fuzz targets in `fuzz/` (`make fuzz`), each named
//! after what it pins; the reproducer's bytes are under `fuzz/artifacts-regressions/`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use huntgate_core::shared_data::MemorySharedData;
use huntgate_core::store::{
    add_rejected, admit, hunter_key, prepare_layout, slot_stats, AdmitOutcome, RegistryCache,
    SlotLookup,
};

const NOW_MS: u64 = 1_700_000_000_000;

/// Found by `shared_data_records`
/// (`fuzz/artifacts-regressions/shared_data_records-rejected-before-first-admission`):
/// a hunt whose slot was never admitted into (its count still has tag 0, e.g. a
/// hunt at limit 0, or a lease share of 0 from its first request on) loses every
/// rejected join it flushed, because `store::add_rejected` only counted into a
/// count already carrying the hunt's tag: its demand never reached the lease
/// report, so the governor never saw it. Fixed: `add_rejected` claims a
/// never-used count the way `admit` does.
#[test]
fn rejected_joins_count_before_the_first_admission() {
    let shared = MemorySharedData::default();
    prepare_layout(&shared, 1, 0).unwrap();
    let mut registry = RegistryCache::default();
    let listed = |_: &str| false;
    let SlotLookup::Slot(slot) = registry
        .resolve(&shared, "hunt-001", 1, &listed, NOW_MS, 1)
        .unwrap()
    else {
        panic!("a free slot was there");
    };
    let key = hunter_key("hunt-001", "hunter-1");
    let outcome = admit(&shared, slot, key, 1_700_000_300, NOW_MS, Some(0)).unwrap();
    assert_eq!(outcome, AdmitOutcome::Full { active: 0 });
    add_rejected(&shared, slot, 1).unwrap();
    assert_eq!(slot_stats(&shared, slot).unwrap(), (0, 1));
}
