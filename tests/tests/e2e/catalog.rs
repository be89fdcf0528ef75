//! Which hunts the filter tracks: listed hunts only (`unlisted_hunts`), and
//! at most `max_tracked_hunts` of them (`untracked_hunts`).

use std::time::Duration;

use huntgate_e2e::metrics::UNTRACKED_HUNT;
use huntgate_e2e::plugin;
use huntgate_e2e::poll::poll_until;
use huntgate_e2e::{Envoy, Upstream};
use serde_json::json;

use crate::{assert_admitted, join};

#[test]
fn unlisted_hunts_can_be_refused() {
    let upstream = Upstream::start();
    let config = plugin::config(json!({"unlisted_hunts": "reject", "hunts": {"listed": {}}}));
    let envoy = Envoy::start(&config, &upstream);
    let client = envoy.client();
    assert_admitted(&join(&client, "listed", "alice"), "listed", 300);
    let response = join(&client, "unlisted", "alice");
    assert_eq!(response.status, 404, "{}", response.summary());
    assert!(!response.from_upstream(), "{}", response.summary());
    assert_eq!(upstream.count(), 1);
}

#[test]
fn hunts_past_max_tracked_pass_when_configured() {
    let upstream = Upstream::start();
    let config = plugin::config(
        json!({"max_tracked_hunts": 2, "untracked_hunts": "pass", "max_hunters": 1}),
    );
    let envoy = Envoy::start(&config, &upstream);
    let client = envoy.client();
    assert_admitted(&join(&client, "t1", "alice"), "t1", 300);
    assert_admitted(&join(&client, "t2", "alice"), "t2", 300);
    // A third hunt is not tracked: it passes, and is counted.
    let response = join(&client, "t3", "alice");
    assert_eq!(response.status, 200, "{}", response.summary());
    assert!(response.from_upstream(), "{}", response.summary());
    assert!(
        response.ticket().is_none(),
        "untracked hunt issued a ticket: {}",
        response.summary()
    );
    poll_until(
        "untracked_hunt counter to reach 1",
        Duration::from_secs(30),
        || (envoy.metrics().get(UNTRACKED_HUNT, &[]) == Some(1.0)).then_some(()),
    );
}
