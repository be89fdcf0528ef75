//! Path classification against the shared table of path tricks
//! (`core/tests/cases/paths.tsv`, also sent through a real Envoy by the e2e suite).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use huntgate_core::path::{hunt_of_path, PathHunt};

const CASES: &str = include_str!("cases/paths.tsv");

fn cases() -> impl Iterator<Item = (&'static str, &'static str)> {
    CASES
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| line.split_once('\t').expect("expected<TAB>path"))
}

fn expected(column: &str) -> PathHunt {
    match column {
        "-" => PathHunt::NotHunt,
        "!invalid" => PathHunt::Invalid,
        "!ambiguous" => PathHunt::Ambiguous,
        hunt => PathHunt::Hunt(hunt.to_string()),
    }
}

#[test]
fn every_path_in_the_shared_table_is_classified_as_expected() {
    let prefix = ["hunts".to_string()];
    let mut wrong = Vec::new();
    for (want, path) in cases() {
        let got = hunt_of_path(path, &prefix);
        if got != expected(want) {
            wrong.push(format!("{path}: expected {want}, got {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(cases().count() > 50);
}

#[test]
fn decoding_never_moves_a_request_out_of_the_prefix() {
    // Issue 9 #1: the filter decoded `%2F`, resolved `..` and saw `/x`, while
    // Envoy forwarded the raw path to a `/hunts/` route.
    let prefix = ["hunts".to_string()];
    assert_eq!(
        hunt_of_path("/hunts/hunt-001/join/..%2F..%2F..%2Fx", &prefix),
        PathHunt::Hunt("hunt-001".into())
    );
    assert_eq!(
        hunt_of_path("/hunts/hunt-001/..%2Fdecoy/join", &prefix),
        PathHunt::Ambiguous
    );
}

#[test]
fn a_multi_segment_prefix_is_matched_in_every_reading() {
    let prefix = ["api".to_string(), "v1".to_string(), "hunts".to_string()];
    assert_eq!(
        hunt_of_path("/API/v1/hunts/h9/go", &prefix),
        PathHunt::Hunt("h9".into())
    );
    assert_eq!(
        hunt_of_path("/api/v1/hunts/h9/..%2F..%2Fx", &prefix),
        PathHunt::Hunt("h9".into())
    );
    assert_eq!(hunt_of_path("/api/v1/h9", &prefix), PathHunt::NotHunt);
}
