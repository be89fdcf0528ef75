//! Path tricks must not smuggle a hunt request past admission: every
//! spelling of `/hunts/h1/...` is hunt h1. Requests are written byte for
//! byte (no client-side normalisation).

use huntgate_e2e::plugin::{self, HUNTER_HEADER, TICKET_HEADER};
use huntgate_e2e::{raw_get, Envoy, Upstream};
use serde_json::json;

use crate::{assert_admitted, assert_hunt_full, assert_passed, join};

/// Spellings of a path under hunt h1.
const TRICKS: &[&str] = &[
    "/hunts/h1/x",
    "/HUNTS/h1/x",
    "/Hunts/H1/x",
    "/hunts/H1/x",
    "//hunts/h1/x",
    "/hunts//h1/x",
    "/x/../hunts/h1/x",
    "/./hunts/./h1/x",
    "/hunts%2Fh1/x",
    "/hunts%2fh1/x",
    "/hunts/h1%2Fx",
    "/%68unts/h1/x",
    "/hunts/%68%31/x",
    "/hunts/h1",
    "/hunts/h1?x=1",
];

#[test]
fn path_tricks_go_through_admission() {
    let upstream = Upstream::start();
    let envoy = Envoy::start(&plugin::config(json!({"max_hunters": 1})), &upstream);
    let alice = assert_admitted(&join(&envoy.client(), "h1", "alice"), "h1", 300);
    let before = upstream.count();

    let mut bypasses = Vec::new();
    for path in TRICKS {
        let response = raw_get(envoy.addr(), path, &[(HUNTER_HEADER, "mallory")]);
        if response.status != 429 {
            bypasses.push(format!("{path} -> {}", response.summary()));
            continue;
        }
        assert_hunt_full(&response, "h1", 1, 1);
    }
    assert!(
        bypasses.is_empty(),
        "path spellings of hunt h1 not rejected as h1 (hunt full):\n{}",
        bypasses.join("\n")
    );
    assert_eq!(
        upstream.count(),
        before,
        "a ticket-less request reached upstream"
    );

    // With her ticket alice passes whatever the spelling.
    for path in TRICKS {
        let response = raw_get(
            envoy.addr(),
            path,
            &[(HUNTER_HEADER, "alice"), (TICKET_HEADER, &alice)],
        );
        assert_passed(&response, "session");
    }
}

#[test]
fn paths_outside_the_prefix_pass_untouched() {
    let upstream = Upstream::start();
    let envoy = Envoy::start(&plugin::config(json!({"max_hunters": 1})), &upstream);
    let client = envoy.client();
    for path in [
        "/",
        "/hunt/h1/x",
        "/huntsx/h1",
        "/x/hunts/h1",
        "/static/app.js",
    ] {
        let response = client.get(path, &[]);
        assert_eq!(response.status, 200, "{path}: {}", response.summary());
        assert!(response.from_upstream(), "{path}: {}", response.summary());
        assert_eq!(response.decision(), None, "{path}: {}", response.summary());
        assert!(
            response.ticket().is_none(),
            "{path}: {}",
            response.summary()
        );
    }
    assert_eq!(upstream.count(), 5);
}
