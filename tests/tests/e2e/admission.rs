//! Admission under concurrency: the limit holds exactly.

use std::sync::{Arc, Barrier};
use std::thread;

use huntgate_e2e::plugin::{self, RETRY_AFTER_S};
use huntgate_e2e::{Envoy, Upstream};
use serde_json::json;

use crate::{assert_admitted, assert_hunt_full, hunter, join};

const JOINS: usize = 200;
const MAX_HUNTERS: u64 = 50;

#[test]
fn concurrent_joins_admit_exactly_max_hunters() {
    let upstream = Upstream::start();
    let envoy = Envoy::start(
        &plugin::config(json!({"max_hunters": MAX_HUNTERS})),
        &upstream,
    );
    let client = envoy.client();
    let barrier = Arc::new(Barrier::new(JOINS));
    let joins: Vec<_> = (0..JOINS)
        .map(|i| {
            let client = client.clone();
            let barrier = Arc::clone(&barrier);
            thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    barrier.wait();
                    join(&client, "race", &hunter(i))
                })
                .expect("spawn joiner")
        })
        .collect();
    let responses: Vec<_> = joins
        .into_iter()
        .map(|j| j.join().expect("joiner thread"))
        .collect();

    let (admitted, rejected): (Vec<_>, Vec<_>) = responses.iter().partition(|r| r.status == 200);
    assert_eq!(
        (admitted.len(), rejected.len()),
        (MAX_HUNTERS as usize, JOINS - MAX_HUNTERS as usize),
        "statuses: {:?}",
        responses.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for response in &admitted {
        assert_admitted(response, "race", 300);
    }
    for response in &rejected {
        assert_hunt_full(response, "race", MAX_HUNTERS, MAX_HUNTERS);
        assert_eq!(response.json()["retry_after_s"], RETRY_AFTER_S);
    }
    assert_eq!(
        upstream.count(),
        MAX_HUNTERS as usize,
        "requests that reached upstream"
    );
}
