//! Shadow mode: nothing is rejected, would-be rejections are marked.

use std::time::Duration;

use huntgate_e2e::metrics::SHADOW_REJECTED;
use huntgate_e2e::plugin;
use huntgate_e2e::poll::poll_until;
use huntgate_e2e::{Envoy, Upstream};
use serde_json::json;

use crate::{assert_admitted, assert_hunt_full, assert_passed, hunter, join};

#[test]
fn shadow_mode_never_rejects_and_counts_would_rejects() {
    let upstream = Upstream::start();
    let envoy = Envoy::start(
        &plugin::config(json!({"mode": "shadow", "max_hunters": 2})),
        &upstream,
    );
    let client = envoy.client();
    let responses: Vec<_> = (0..5).map(|i| join(&client, "quiet", &hunter(i))).collect();
    for response in responses.iter().take(2) {
        assert_admitted(response, "quiet", 300);
    }
    for response in responses.iter().skip(2) {
        assert_passed(response, "would-reject");
        assert!(
            response.ticket().is_none(),
            "would-reject got a ticket: {}",
            response.summary()
        );
    }
    assert_eq!(upstream.count(), 5);
    poll_until(
        "shadow_rejected counter to reach 3",
        Duration::from_secs(30),
        || (envoy.metrics().get(SHADOW_REJECTED, &[]) == Some(3.0)).then_some(()),
    );
}

#[test]
fn per_hunt_shadow_override() {
    let upstream = Upstream::start();
    let config = plugin::config(json!({
        "max_hunters": 1,
        "hunts": {"soft": {"mode": "shadow"}, "tight": {"max_hunters": 2}},
    }));
    let envoy = Envoy::start(&config, &upstream);
    let client = envoy.client();
    assert_admitted(&join(&client, "soft", "alice"), "soft", 300);
    assert_passed(&join(&client, "soft", "bob"), "would-reject");
    // Other hunts stay enforced, with their own limit.
    assert_admitted(&join(&client, "hard", "alice"), "hard", 300);
    assert_hunt_full(&join(&client, "hard", "bob"), "hard", 1, 1);
    assert_admitted(&join(&client, "tight", "alice"), "tight", 300);
    assert_admitted(&join(&client, "tight", "bob"), "tight", 300);
    assert_hunt_full(&join(&client, "tight", "carol"), "tight", 2, 2);
}
