//! The sweeper's schedule (issue 12): a tick reads the counts of the slots due,
//! not of every tracked hunt, and every session still expires on time.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use huntgate_core::engine::{Event, TickReport};
use huntgate_core::store::Swept;
use huntgate_core::sweep_schedule::next_read_ms;

#[path = "support/proxy.rs"]
mod proxy;
use proxy::{headers, Proxy, NOW};

const TTL_S: u32 = 30;

impl Proxy {
    fn join_hunt(&mut self, hunt: &str, hunter: &str, now: u64) -> Event {
        let path = format!("/hunts/{hunt}/join");
        self.handle(0, &headers("GET", &path, Some(hunter), None), now)
            .event
    }

    fn tick(&mut self, w: usize, now: u64) -> TickReport {
        self.workers[w]
            .tick(&self.config, &self.shared, now)
            .unwrap()
    }
}

/// 1,000 tracked hunts with one session each, 10 of them gauged: between the
/// first tick and the sessions' expiry, a tick reads the 10 gauged counts only;
/// at the expiry every session is swept in that tick.
#[test]
fn a_tick_reads_the_slots_due_not_every_tracked_hunt() {
    let mut p = Proxy::with_ttl(TTL_S, r#","max_tracked_hunts":1000,"max_hunt_metrics":10"#);
    for h in 0..1000 {
        assert_eq!(
            p.join_hunt(&format!("h{h}"), "hunter", NOW),
            Event::Admitted
        );
    }
    let first = p.tick(0, NOW);
    assert!(first.sweeper);
    assert_eq!((first.slots_read, first.expired), (1000, 0));
    for s in 1..TTL_S {
        let report = p.tick(0, NOW + u64::from(s) * 1000);
        assert_eq!((report.slots_read, report.expired), (10, 0), "at +{s} s");
        assert_eq!(report.gauges.len(), 10);
    }
    let expiry = p.tick(0, NOW + u64::from(TTL_S) * 1000);
    assert_eq!((expiry.slots_read, expiry.expired), (1000, 1000));
    // Empty now: read again one TTL later at the earliest.
    let after = p.tick(0, NOW + u64::from(TTL_S + 1) * 1000);
    assert_eq!(after.slots_read, 10);
}

/// A hunt read while empty, joined right after: its session is swept at its
/// expiry, not one TTL after the join was noticed.
#[test]
fn a_session_started_after_a_read_is_swept_at_its_expiry() {
    let mut p = Proxy::with_ttl(TTL_S, r#","max_hunt_metrics":1"#);
    assert_eq!(p.join_hunt("gauged", "a", NOW), Event::Admitted);
    assert_eq!(p.join_hunt("quiet", "a", NOW), Event::Admitted);
    // Both sessions expire at +30 s; "quiet" is then read and left empty.
    let end = NOW + u64::from(TTL_S) * 1000;
    p.tick(0, NOW);
    assert_eq!(p.tick(0, end).expired, 2);
    // A join 400 ms after that read expires 30.6 s later (rounded up to the second).
    assert_eq!(p.join_hunt("quiet", "b", end + 400), Event::Admitted);
    let mut swept_at = None;
    for ms in (end + 1000..end + 40_000).step_by(1000) {
        if p.tick(0, ms).expired == 1 {
            swept_at = Some(ms);
            break;
        }
    }
    assert_eq!(swept_at, Some(end + 31_000));
}

/// A worker that takes the sweeper lease over reads every slot at its first tick
/// (its schedule may be stale), then only what is due.
#[test]
fn a_new_sweeper_starts_by_reading_every_slot() {
    let mut p = Proxy::with_ttl(TTL_S, r#","max_hunt_metrics":0"#);
    for h in 0..20 {
        p.join_hunt(&format!("h{h}"), "a", NOW);
    }
    assert_eq!(p.tick(0, NOW).slots_read, 20);
    assert_eq!(p.tick(0, NOW + 1000).slots_read, 0);
    // Worker 0 stops ticking; worker 1 gets the lease once it lapses.
    let later = NOW + 10_000;
    let report = p.tick(1, later);
    assert!(report.sweeper);
    assert_eq!(report.slots_read, 20);
    assert_eq!(p.tick(1, later + 1000).slots_read, 0);
    // Worker 0 ticks again without the lease, then gets it back later: all again.
    assert!(!p.tick(0, later + 1500).sweeper);
    let back = p.tick(0, later + 20_000);
    assert!(back.sweeper);
    assert_eq!(back.slots_read, 20);
}

#[test]
fn the_next_read_is_the_earliest_expiry_capped_at_one_ttl() {
    let swept = |active, next_expiry_s| Swept {
        removed: 0,
        active,
        next_expiry_s,
    };
    let now = 1_000_000;
    // Empty: a session started from now expires no sooner than one TTL.
    assert_eq!(next_read_ms(now, 30, &swept(0, None)), now + 30_000);
    // The earliest record's expiry, if sooner than one TTL.
    assert_eq!(next_read_ms(now, 30, &swept(4, Some(1_010))), 1_010_000);
    assert_eq!(next_read_ms(now, 30, &swept(4, Some(9_999))), now + 30_000);
    // Seats without records yet: at once.
    assert_eq!(next_read_ms(now, 30, &swept(4, None)), now);
}
