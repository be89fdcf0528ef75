//! Malformed requests: bad hunt ids, missing or duplicated identity headers.

use huntgate_e2e::plugin::{self, HUNTER_HEADER};
use huntgate_e2e::{raw_get, Envoy, Upstream};
use serde_json::json;

use crate::{assert_admitted, assert_bad_request, assert_passed};

#[test]
fn invalid_hunt_ids_are_rejected_with_400() {
    let upstream = Upstream::start();
    let envoy = Envoy::start(&plugin::config(json!({})), &upstream);
    let too_long = "h".repeat(65);
    let longest = "h".repeat(64);
    let invalid = [
        "h!1".to_owned(),
        "h@1".to_owned(),
        "a%20b".to_owned(),
        "h%C3%A9".to_owned(),
        "h~1".to_owned(),
        too_long,
    ];
    for hunt in &invalid {
        let path = format!("/hunts/{hunt}/join");
        let response = raw_get(envoy.addr(), &path, &[(HUNTER_HEADER, "alice")]);
        assert_bad_request(&response, "invalid_hunt_id");
    }
    assert_eq!(
        upstream.count(),
        0,
        "a request with an invalid hunt id reached upstream"
    );
    // The bounds themselves are fine.
    let client = envoy.client();
    assert_admitted(
        &client.get(
            &format!("/hunts/{longest}/join"),
            &[(HUNTER_HEADER, "alice")],
        ),
        &longest,
        300,
    );
    assert_admitted(
        &client.get("/hunts/A.b_c-9/join", &[(HUNTER_HEADER, "alice")]),
        "a.b_c-9",
        300,
    );
}

#[test]
fn missing_hunter_is_401_and_duplicate_hunter_is_400() {
    let upstream = Upstream::start();
    let envoy = Envoy::start(&plugin::config(json!({})), &upstream);
    let client = envoy.client();

    let response = client.get("/hunts/h1/join", &[]);
    assert_eq!(response.status, 401, "{}", response.summary());
    assert!(!response.from_upstream());
    assert_eq!(
        response.json()["error"],
        "hunter_required",
        "{}",
        response.summary()
    );
    assert_eq!(response.json()["hunt"], "h1", "{}", response.summary());

    let response = client.get(
        "/hunts/h1/join",
        &[(HUNTER_HEADER, "alice"), (HUNTER_HEADER, "bob")],
    );
    assert_bad_request(&response, "duplicate_hunter_header");
    assert_eq!(upstream.count(), 0);
}

#[test]
fn hunt_from_header_mode() {
    let upstream = Upstream::start();
    let config = plugin::config(json!({"hunt": {"header": "x-veltrix-hunt"}, "max_hunters": 1}));
    let envoy = Envoy::start(&config, &upstream);
    let client = envoy.client();

    // No hunt header: not a hunt request, passes untouched.
    let response = client.get("/hunts/h1/join", &[(HUNTER_HEADER, "alice")]);
    assert_eq!(response.status, 200, "{}", response.summary());
    assert_eq!(response.decision(), None, "{}", response.summary());
    assert!(response.ticket().is_none());

    // Hunt ids are case-insensitive.
    let response = client.get(
        "/anything",
        &[("x-veltrix-hunt", "H1"), (HUNTER_HEADER, "alice")],
    );
    assert_admitted(&response, "h1", 300);
    assert!(
        response.upstream_header("x-veltrix-hunt").is_some(),
        "{}",
        response.summary()
    );
    let response = client.get(
        "/other",
        &[("x-veltrix-hunt", "h1"), (HUNTER_HEADER, "alice")],
    );
    assert_passed(&response, "admitted");

    let response = client.get(
        "/anything",
        &[
            ("x-veltrix-hunt", "h1"),
            ("x-veltrix-hunt", "h2"),
            (HUNTER_HEADER, "bob"),
        ],
    );
    assert_bad_request(&response, "duplicate_hunt_header");
    let response = client.get(
        "/anything",
        &[("x-veltrix-hunt", "bad!id"), (HUNTER_HEADER, "bob")],
    );
    assert_bad_request(&response, "invalid_hunt_id");
}
