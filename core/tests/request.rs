//! Request classification: hunt and hunter extraction, path tricks, duplicates.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use huntgate_core::abi::{decode_header_pairs_where, encode_header_pairs};
use huntgate_core::config::Config;
use huntgate_core::request::{classify, reads_header, Classified, Hunter, Refusal};

fn config(extra: &str) -> Config {
    Config::from_json(
        format!(r#"{{"standalone":true,"ticket_secrets":["0123456789abcdef"]{extra}}}"#).as_bytes(),
    )
    .unwrap()
}

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn hunt_of(config: &Config, path: &str) -> Option<String> {
    let h = headers(&[(":path", path), ("x-veltrix-hunter", "alice")]);
    match classify(config, &h) {
        Classified::Hunt(req) => Some(req.hunt),
        Classified::NotHunt => None,
        Classified::Refuse(r) => Some(format!("refused:{r:?}")),
    }
}

#[test]
fn plain_hunt_paths_map_to_their_hunt() {
    let c = config("");
    assert_eq!(hunt_of(&c, "/hunts/h1/move").as_deref(), Some("h1"));
    assert_eq!(hunt_of(&c, "/hunts/h1").as_deref(), Some("h1"));
    assert_eq!(
        hunt_of(&c, "/hunts/Hunt-001/x?y=1").as_deref(),
        Some("hunt-001")
    );
}

#[test]
fn other_paths_pass_untouched() {
    let c = config("");
    for path in [
        "/",
        "/health",
        "/hunts",
        "/hunts/",
        "/huntsx/h1",
        "/api/hunts/h1",
    ] {
        assert_eq!(hunt_of(&c, path), None, "{path}");
    }
}

#[test]
fn path_tricks_still_reach_admission() {
    let c = config("");
    for path in [
        "/HUNTS/h1/x",
        "//hunts/h1/x",
        "/hunts//h1/x",
        "/x/../hunts/h1/x",
        "/./hunts/./h1/x",
        "/hunts%2Fh1/x",
        "/hunts%2fh1/x",
        "/%68unts/h1/x",
        "\\hunts\\h1\\x",
        "/hunts;v=1/h1/x",
        "/hunts/h1;jsessionid=1/x",
    ] {
        assert_eq!(hunt_of(&c, path).as_deref(), Some("h1"), "{path}");
    }
}

#[test]
fn bad_hunt_ids_are_refused_not_passed() {
    let c = config("");
    let long = format!("/hunts/{}/x", "a".repeat(65));
    for path in [
        "/hunts/h%20x/move",
        "/hunts/h$/x",
        long.as_str(),
        "/hunts/%FF/x",
    ] {
        assert_eq!(
            hunt_of(&c, path).as_deref(),
            Some("refused:InvalidHuntId"),
            "{path}"
        );
    }
    let exactly_64 = format!("/hunts/{}/x", "a".repeat(64));
    assert_eq!(hunt_of(&c, &exactly_64), Some("a".repeat(64)));
}

#[test]
fn custom_prefix_with_several_segments() {
    let c = config(r#","hunt":{"path_prefix":"/api/v1/hunts"}"#);
    assert_eq!(hunt_of(&c, "/API/v1/hunts/h9/go").as_deref(), Some("h9"));
    assert_eq!(hunt_of(&c, "/hunts/h9/go"), None);
}

#[test]
fn hunter_is_required_and_must_be_single_and_visible_ascii() {
    let c = config("");
    let missing = headers(&[(":path", "/hunts/h1")]);
    assert_eq!(
        classify(&c, &missing),
        Classified::Refuse(Refusal::HunterRequired { hunt: "h1".into() })
    );
    let twice = headers(&[
        (":path", "/hunts/h1"),
        ("x-veltrix-hunter", "a"),
        ("x-veltrix-hunter", "b"),
    ]);
    assert_eq!(
        classify(&c, &twice),
        Classified::Refuse(Refusal::DuplicateHunterHeader)
    );
    let spaces = headers(&[(":path", "/hunts/h1"), ("x-veltrix-hunter", "a b")]);
    assert_eq!(
        classify(&c, &spaces),
        Classified::Refuse(Refusal::InvalidHunterId)
    );
}

#[test]
fn header_mode_reads_hunt_header_and_refuses_duplicates() {
    let c = config(r#","hunt":{"header":"X-Veltrix-Hunt"}"#);
    let ok = headers(&[
        (":path", "/anything"),
        ("x-veltrix-hunt", "H1"),
        ("x-veltrix-hunter", "a"),
    ]);
    match classify(&c, &ok) {
        Classified::Hunt(req) => {
            assert_eq!(req.hunt, "h1");
            assert_eq!(req.hunter, Hunter::Identified("a"));
        }
        other => panic!("{other:?}"),
    }
    let none = headers(&[(":path", "/hunts/h1"), ("x-veltrix-hunter", "a")]);
    assert_eq!(classify(&c, &none), Classified::NotHunt);
    let twice = headers(&[("x-veltrix-hunt", "h1"), ("x-veltrix-hunt", "h2")]);
    assert_eq!(
        classify(&c, &twice),
        Classified::Refuse(Refusal::DuplicateHuntHeader)
    );
}

#[test]
fn unlisted_hunts_can_be_refused() {
    let c = config(r#","unlisted_hunts":"reject","hunts":{"h1":{}}"#);
    assert!(matches!(hunt_of(&c, "/hunts/h1/x").as_deref(), Some("h1")));
    assert_eq!(
        hunt_of(&c, "/hunts/h2/x").as_deref(),
        Some("refused:UnknownHunt { hunt: \"h2\" }")
    );
}

#[test]
fn ticket_comes_from_header_then_cookie_of_this_hunt() {
    let c = config("");
    let both = headers(&[
        (":path", "/hunts/h1"),
        ("x-veltrix-hunter", "a"),
        ("cookie", "huntgate.h2=other; huntgate.h1=fromcookie"),
        ("x-huntgate-ticket", "fromheader"),
    ]);
    let cookie_only = headers(&[
        (":path", "/hunts/h1"),
        ("x-veltrix-hunter", "a"),
        ("cookie", "x=1; huntgate.h2=other"),
        ("cookie", "huntgate.h1=fromcookie"),
    ]);
    let tickets = |h: &[(String, String)]| match classify(&c, h) {
        Classified::Hunt(req) => req.tickets.iter().map(str::to_string).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(tickets(&both), ["fromheader", "fromcookie"]);
    assert_eq!(tickets(&cookie_only), ["fromcookie"]);
}

#[test]
fn every_presented_ticket_is_listed_up_to_four_headers_first() {
    let c = config("");
    let many = headers(&[
        (":path", "/hunts/h1"),
        ("x-veltrix-hunter", "a"),
        ("cookie", "huntgate.h1=c1; huntgate.H1=c2; huntgate.h2=no"),
        ("x-huntgate-ticket", "t1"),
        ("x-huntgate-ticket", " "),
        ("x-huntgate-ticket", "t2"),
        ("cookie", "huntgate.h1=c3"),
    ]);
    match classify(&c, &many) {
        Classified::Hunt(req) => {
            let tickets: Vec<&str> = req.tickets.iter().collect();
            assert_eq!(tickets, ["t1", "t2", "c1", "c2"]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn anonymous_mode_needs_no_hunter_header() {
    let c = config(r#","hunter":{"anonymous":true}"#);
    let h = headers(&[(":path", "/hunts/h1")]);
    match classify(&c, &h) {
        Classified::Hunt(req) => assert_eq!(req.hunter, Hunter::Anonymous),
        other => panic!("{other:?}"),
    }
}

#[test]
fn classifying_only_the_headers_it_reads_gives_the_same_answer() {
    let config = config("");
    let all = [
        (":path", "/hunts/h1/play"),
        (":method", "GET"),
        ("user-agent", "test"),
        ("x-veltrix-hunter", "alice"),
        ("x-veltrix-hunter", "mallory"),
        ("cookie", "a=b"),
    ];
    let bytes = encode_header_pairs(&all);
    let wanted = decode_header_pairs_where(&bytes, |name| reads_header(&config, name)).unwrap();
    let names: Vec<&str> = wanted.iter().map(|(k, _)| k.as_ref()).collect();
    // `:method` for the leave request (`session_end.leave_path`).
    assert_eq!(
        names,
        [
            ":path",
            ":method",
            "x-veltrix-hunter",
            "x-veltrix-hunter",
            "cookie"
        ]
    );
    assert!(reads_header(&config, b"x-huntgate-decision"));
    assert_eq!(
        classify(&config, &wanted),
        classify(&config, &headers(&all))
    );
    assert_eq!(
        classify(&config, &wanted),
        Classified::Refuse(Refusal::DuplicateHunterHeader)
    );
    let by_header = self::config(r#","hunt":{"header":"x-hunt"}"#);
    assert!(reads_header(&by_header, b"x-hunt"));
    // The leave request is `POST /leave`.
    assert!(reads_header(&by_header, b":path"));
    assert!(reads_header(&by_header, b"x-huntgate-ticket"));
    let no_leave = self::config(r#","hunt":{"header":"x-hunt"},"session_end":{"leave_path":null}"#);
    assert!(!reads_header(&no_leave, b":path"));
    assert!(!reads_header(&no_leave, b":method"));
}
