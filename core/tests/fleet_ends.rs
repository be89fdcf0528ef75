//! Ends that travel between proxies (issue 16): a proxy reports the sessions it ended in
//! its lease exchange, the governor hands them to the others, and there the ended ticket
//! counts as no ticket on every worker, as on the proxy that ended it. Two proxies here
//! are two shared stores; the governor's part is played by handing one's report to the
//! other (`governor/src/fleet/ends.rs` is the real log).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use huntgate_core::engine::{Effects, Event};
use huntgate_core::lease::{EndsReport, EndsTracker, FleetEnds, MAX_REPORTED_ENDS};
use huntgate_core::store;
use huntgate_core::ticket::TicketError;

#[path = "support/proxy.rs"]
mod proxy;
use proxy::{headers, ticket_of, Proxy, NOW};

impl Proxy {
    fn new() -> Self {
        Self::with_ttl(100, "")
    }

    fn play(&mut self, w: usize, hunter: &str, ticket: Option<&str>, now: u64) -> Effects {
        self.handle(
            w,
            &headers("GET", "/hunts/h1/move", Some(hunter), ticket),
            now,
        )
    }

    fn leave(&mut self, w: usize, hunter: &str, ticket: &str, now: u64) -> Effects {
        self.handle(
            w,
            &headers("POST", "/hunts/h1/leave", Some(hunter), Some(ticket)),
            now,
        )
    }

    /// The fetcher worker's (worker 0) ends for its next report.
    fn ends_report(&mut self, now: u64) -> EndsReport {
        let (report, error) = self.workers[0].ends_report(&self.config, &self.shared, now);
        assert!(error.is_none(), "{error:?}");
        report
    }

    /// The governor's answer reaches the fetcher worker.
    fn answered(&mut self, ends: Option<FleetEnds>, now: u64) -> store::FleetEndsRecorded {
        self.workers[0]
            .fleet_ends_received(&self.config, &self.shared, ends, now)
            .unwrap()
    }
}

fn fleet_ends(cursor: &str, sessions: Vec<(u64, u64)>) -> Option<FleetEnds> {
    Some(FleetEnds {
        cursor: cursor.to_string(),
        sessions,
    })
}

#[test]
fn a_session_ended_on_one_proxy_counts_as_no_ticket_on_every_worker_of_another_after_one_exchange()
{
    let (mut a, mut b) = (Proxy::new(), Proxy::new());
    let joined = a.play(0, "ana", None, NOW);
    assert_eq!(joined.event, Event::Admitted);
    let ticket = ticket_of(&joined);
    // Before the end, the other proxy honours the ticket uncounted (the hot path).
    assert_eq!(
        b.play(1, "ana", Some(&ticket), NOW + 1).event,
        Event::Session
    );

    assert_eq!(a.leave(1, "ana", &ticket, NOW + 10).event, Event::Left);
    let report = a.ends_report(NOW + 20);
    let key = store::hunter_key("h1", "ana");
    assert_eq!(report.ends, vec![(key, NOW + 10)]);

    let recorded = b.answered(fleet_ends("c1", report.ends.clone()), NOW + 30);
    assert_eq!(recorded.recorded, 1);
    for w in 0..2 {
        let replay = b.play(w, "ana", Some(&ticket), NOW + 40 + w as u64);
        assert_ne!(replay.event, Event::Session, "worker {w} let it pass");
        assert_eq!(
            replay.ticket_refused,
            Some(TicketError::Ended),
            "worker {w}"
        );
        assert!(
            replay.issue.is_some(),
            "worker {w}: counted, with a new ticket"
        );
    }
    // The re-join's ticket passes on both proxies' hot paths.
    let rejoined = b.play(0, "ana", None, NOW + 50);
    let fresh = ticket_of(&rejoined);
    assert_eq!(
        b.play(1, "ana", Some(&fresh), NOW + 60).event,
        Event::Session
    );
    assert_eq!(
        a.play(0, "ana", Some(&fresh), NOW + 60).event,
        Event::Session
    );

    // A learnt end is not reported on (no echo); the cursor goes back.
    let from_b = b.ends_report(NOW + 70);
    assert!(from_b.ends.is_empty(), "{from_b:?}");
    assert_eq!(from_b.after.as_deref(), Some("c1"));
}

#[test]
fn an_end_is_reported_until_an_answer_acknowledges_it_then_never_again() {
    let mut a = Proxy::new();
    let ticket = ticket_of(&a.play(0, "ana", None, NOW));
    a.leave(0, "ana", &ticket, NOW + 10);
    let first = a.ends_report(NOW + 20);
    assert_eq!(first.ends.len(), 1);
    // The exchange failed: the same end goes again.
    a.answered(None, NOW + 25);
    assert_eq!(a.ends_report(NOW + 30).ends, first.ends);
    a.answered(fleet_ends("c1", vec![]), NOW + 35);
    assert!(a.ends_report(NOW + 40).ends.is_empty());
    // A later end of the same hunter is new.
    let ticket = ticket_of(&a.play(1, "ana", None, NOW + 50));
    a.leave(1, "ana", &ticket, NOW + 60);
    assert_eq!(
        a.ends_report(NOW + 70).ends,
        vec![(store::hunter_key("h1", "ana"), NOW + 60)]
    );
}

#[test]
fn a_rejoin_in_the_millisecond_of_the_end_gets_a_ticket_that_passes() {
    let mut a = Proxy::new();
    let ticket = ticket_of(&a.play(0, "ana", None, NOW));
    assert_eq!(a.leave(0, "ana", &ticket, NOW + 10).event, Event::Left);
    // The same worker, the same millisecond, no ticket: a new session.
    let rejoined = a.play(0, "ana", None, NOW + 10);
    let fresh = ticket_of(&rejoined);
    for w in 0..2 {
        assert_eq!(
            a.play(w, "ana", Some(&fresh), NOW + 11).event,
            Event::Session,
            "worker {w}"
        );
    }
}

#[test]
fn a_rejoin_before_a_fleet_end_s_time_by_this_proxy_s_clock_still_gets_a_ticket_that_passes() {
    let mut b = Proxy::new();
    let key = store::hunter_key("h1", "ana");
    // The ending proxy's clock runs 500 ms ahead of this one's.
    b.answered(fleet_ends("c1", vec![(key, NOW + 500)]), NOW);
    let fresh = ticket_of(&b.play(0, "ana", None, NOW + 1));
    assert_eq!(
        b.play(1, "ana", Some(&fresh), NOW + 2).event,
        Event::Session
    );
}

#[test]
fn fleet_ends_past_their_tickets_life_or_already_known_are_not_recorded() {
    let mut b = Proxy::new();
    let keep_ms = (100 + 2) * 1000;
    let fresh = (store::hunter_key("h1", "ana"), NOW);
    let stale = (store::hunter_key("h1", "bob"), NOW - keep_ms - 1);
    let recorded = b.answered(fleet_ends("c1", vec![fresh, stale]), NOW);
    assert_eq!(recorded.recorded, 1);
    // Sent again (a resent report): nothing new.
    assert_eq!(b.answered(fleet_ends("c2", vec![fresh]), NOW).recorded, 0);
    // A later end of the same hunter moves its time.
    let later = (fresh.0, NOW + 5);
    assert_eq!(
        b.answered(fleet_ends("c3", vec![later]), NOW + 5).recorded,
        1
    );
}

#[test]
fn a_report_carries_at_most_its_bound_oldest_first_and_the_rest_follow() {
    let mut tracker = EndsTracker::default();
    let total = MAX_REPORTED_ENDS + 904;
    let local: Vec<(u64, u64)> = (0..total as u64).rev().map(|k| (k, NOW + k)).collect();
    tracker.scanned(vec![1], local, NOW + total as u64, 1_000_000);
    let first = tracker.report();
    assert_eq!(first.ends.len(), MAX_REPORTED_ENDS);
    assert_eq!(first.ends[0], (0, NOW), "oldest first");
    tracker.acknowledged();
    let second = tracker.report();
    assert_eq!(second.ends.len(), 904);
    assert_eq!(second.ends[0].1, NOW + MAX_REPORTED_ENDS as u64);
    tracker.acknowledged();
    assert!(tracker.report().ends.is_empty());
    assert_eq!(tracker.pending(), 0);
}

#[test]
fn an_end_another_worker_writes_after_a_scan_is_reported_whatever_its_time_stamp() {
    let mut tracker = EndsTracker::default();
    tracker.scanned(vec![1], vec![(1, NOW + 100)], NOW + 103, 1_000_000);
    assert_eq!(tracker.report().ends, vec![(1, NOW + 100)]);
    tracker.acknowledged();
    // Stamped before the scan's time, written after it (the generations moved).
    tracker.scanned(
        vec![2],
        vec![(1, NOW + 100), (2, NOW + 101)],
        NOW + 104,
        1_000_000,
    );
    assert_eq!(tracker.report().ends, vec![(2, NOW + 101)]);
}

#[test]
fn a_list_full_of_learnt_ends_still_takes_this_proxy_s_own_end() {
    let mut a = Proxy::new();
    let shard = store::ended_shard_of(store::hunter_key("h1", "ana"));
    let learnt: Vec<(u64, u64)> = (0..)
        .map(|k: u64| k * u64::from(store::ENDED_SHARDS) + u64::from(shard))
        .take(store::MAX_ENDED_PER_SHARD)
        .map(|key| (key, NOW))
        .collect();
    let recorded = a.answered(fleet_ends("c1", learnt), NOW);
    assert_eq!(recorded.recorded, store::MAX_ENDED_PER_SHARD);
    let ticket = ticket_of(&a.play(0, "ana", None, NOW + 1));
    assert_eq!(a.leave(1, "ana", &ticket, NOW + 2).event, Event::Left);
    let list = store::ended_sessions(&a.shared, shard).unwrap();
    assert_eq!(
        list.len(),
        store::MAX_ENDED_PER_SHARD,
        "one learnt end made room"
    );
    assert!(list.contains(&(store::hunter_key("h1", "ana"), NOW + 2)));
    assert_eq!(
        a.play(0, "ana", Some(&ticket), NOW + 3).ticket_refused,
        Some(TicketError::Ended)
    );
}

#[test]
fn a_learnt_end_dated_ahead_of_this_clock_is_kept_as_ending_at_most_5_s_from_now() {
    let mut b = Proxy::new();
    let key = store::hunter_key("h1", "ana");
    b.answered(fleet_ends("c1", vec![(key, NOW + 3_600_000)]), NOW);
    let list = store::ended_sessions(&b.shared, store::ended_shard_of(key)).unwrap();
    assert_eq!(list, vec![(key, NOW + store::MAX_FLEET_END_AHEAD_MS)]);
}
