//! Fault injection on shared data (issue 13): a host call that fails at any point of a
//! join, a re-join or a sweep never takes a seat away from the hunt for good. The seats
//! a failure leaves counted without a session are given back at a later tick.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use std::cell::Cell;

use huntgate_core::config::Config;
use huntgate_core::engine::{Event, Worker};
use huntgate_core::shared_data::{MemorySharedData, SetOutcome, SharedData, StoreError};

const NOW: u64 = 1_800_000_000_000;
const LIMIT: usize = 3;

/// Shared data whose host calls (gets and sets, counted together) fail from call
/// `fail_from` on, `fail_count` times in a row.
#[derive(Default)]
struct Faulty {
    inner: MemorySharedData,
    calls: Cell<u32>,
    fail_from: Cell<u32>,
    fail_count: Cell<u32>,
}

impl Faulty {
    fn fail(&self) -> Result<(), StoreError> {
        let n = self.calls.get() + 1;
        self.calls.set(n);
        let from = self.fail_from.get();
        if from > 0 && n >= from && n < from + self.fail_count.get() {
            return Err(StoreError::Host("injected failure".into()));
        }
        Ok(())
    }

    /// Fails `count` calls starting `after` calls from now.
    fn arm(&self, after: u32, count: u32) {
        self.fail_from.set(self.calls.get() + after);
        self.fail_count.set(count);
    }

    fn heal(&self) {
        self.fail_from.set(0);
    }
}

impl SharedData for Faulty {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        self.fail()?;
        self.inner.get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<SetOutcome, StoreError> {
        self.fail()?;
        self.inner.set(key, value, cas)
    }
}

fn config() -> Config {
    Config::from_json(
        format!(
            r#"{{"standalone":true,"ticket_secrets":["0123456789abcdef"],"session_ttl_s":10,
                "max_hunters":{LIMIT},"max_tracked_hunts":2}}"#
        )
        .as_bytes(),
    )
    .unwrap()
}

fn join(worker: &mut Worker, config: &Config, shared: &Faulty, hunter: &str, now: u64) -> Event {
    let headers = [
        (":path", "/hunts/h1/join".to_string()),
        ("x-veltrix-hunter", hunter.to_string()),
    ];
    worker
        .handle(config, shared, &headers, now, &mut String::new)
        .event
}

/// After healing and a tick, how many distinct new hunters the hunt still admits, plus
/// those admitted before: must be exactly the limit.
fn seats_left(worker: &mut Worker, config: &Config, shared: &Faulty, admitted: usize) {
    shared.heal();
    worker.tick(config, shared, NOW + 50).unwrap();
    let mut more = 0;
    for i in 0..10 {
        if join(worker, config, shared, &format!("later-{i}"), NOW + 60) == Event::Admitted {
            more += 1;
        }
    }
    assert_eq!(
        admitted + more,
        LIMIT,
        "{admitted} admitted before, {more} after: a failure took a seat away"
    );
}

/// Two hunters in, then a third join with a burst of failed host calls at every
/// possible point of it: the hunt never loses a seat.
#[test]
fn a_failure_at_any_host_call_of_a_join_never_takes_a_seat_away() {
    for burst in [1, 2, 3, 200] {
        for after in 1..40 {
            let config = config();
            let shared = Faulty::default();
            let mut worker = Worker::new(1);
            worker.configure(&config, &shared, NOW).unwrap();
            let mut admitted = 0;
            for hunter in ["a", "b"] {
                assert_eq!(
                    join(&mut worker, &config, &shared, hunter, NOW),
                    Event::Admitted
                );
                admitted += 1;
            }
            shared.arm(after, burst);
            if join(&mut worker, &config, &shared, "c", NOW + 10) == Event::Admitted {
                admitted += 1;
            }
            seats_left(&mut worker, &config, &shared, admitted);
        }
    }
}

/// A hunter re-joining without a ticket while host calls fail: still one seat.
#[test]
fn a_failure_during_a_re_join_never_takes_a_second_seat_or_loses_one() {
    for burst in [1, 2, 200] {
        for after in 1..40 {
            let config = config();
            let shared = Faulty::default();
            let mut worker = Worker::new(1);
            worker.configure(&config, &shared, NOW).unwrap();
            assert_eq!(
                join(&mut worker, &config, &shared, "a", NOW),
                Event::Admitted
            );
            shared.arm(after, burst);
            let _ = join(&mut worker, &config, &shared, "a", NOW + 10);
            seats_left(&mut worker, &config, &shared, 1);
        }
    }
}

/// The sweep of expired sessions fails part-way (after some shards were rewritten):
/// every expired session's seat still comes back.
#[test]
fn a_failure_during_a_sweep_never_keeps_an_expired_seat() {
    for burst in [1, 2, 200] {
        for after in 1..80 {
            let config = config();
            let shared = Faulty::default();
            let mut worker = Worker::new(1);
            worker.configure(&config, &shared, NOW).unwrap();
            for hunter in ["a", "b", "c"] {
                assert_eq!(
                    join(&mut worker, &config, &shared, hunter, NOW),
                    Event::Admitted
                );
            }
            // All three expire (TTL 10 s); the sweep meets the failure.
            let later = NOW + 20_000;
            shared.arm(after, burst);
            let _ = worker.tick(&config, &shared, later);
            shared.heal();
            worker.tick(&config, &shared, later + 1_000).unwrap();
            let mut admitted = 0;
            for i in 0..10 {
                let hunter = format!("new-{i}");
                if join(&mut worker, &config, &shared, &hunter, later + 1_100) == Event::Admitted {
                    admitted += 1;
                }
            }
            assert_eq!(
                admitted, LIMIT,
                "an expired session kept its seat (failure after {after})"
            );
        }
    }
}
