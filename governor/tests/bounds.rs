//! The governor validates what it serves the way the filter validates what it
//! receives (issue 9 #5).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use huntgate_governor::policy::compile::load_dir;
use huntgate_governor::policy::Overrides;
use support::write;

const DEFAULTS: &str = "
eval_period_s: 5
max_hunters: 2000
signals: []
";

fn load(hunt: &str) -> Result<huntgate_governor::policy::Policy, String> {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "defaults.yaml", DEFAULTS);
    write(dir.path(), "hunts/h1.yaml", hunt);
    load_dir(dir.path(), &Overrides::default()).map_err(|e| e.to_string())
}

#[test]
fn max_hunters_above_the_filters_bound_is_refused() {
    let err = load("max_hunters: 10000001\n").unwrap_err();
    assert!(
        err.contains("max_hunters") && err.contains("10000000"),
        "{err}"
    );
    assert!(load("max_hunters: 10000000\n").is_ok());
}

#[test]
fn a_negative_zero_pin_is_served_as_zero() {
    let policy = load("max_hunters: 10\npin_ratio: -0.0\n").unwrap();
    let pin = policy.hunts["h1"].pin_ratio.unwrap();
    assert!(pin == 0.0 && pin.is_sign_positive(), "{pin:?}");
    assert_eq!(serde_json::json!(pin).to_string(), "0.0");
}
