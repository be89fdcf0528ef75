//! Invalid plugin configurations: Envoy refuses them and the log names the
//! field at fault.

use huntgate_e2e::plugin;
use huntgate_e2e::Envoy;
use serde_json::{json, Value};

fn assert_refused(overrides: Value, field: &str) {
    let config = plugin::config(overrides);
    let exited = Envoy::start_expecting_exit(&config);
    assert!(
        !exited.status.success(),
        "Envoy exited with {} for config {config}",
        exited.status
    );
    let line = exited
        .log
        .lines()
        .find(|line| line.contains("huntgate: invalid configuration"))
        .unwrap_or_else(|| {
            panic!(
                "no `huntgate: invalid configuration` line in Envoy's log for {config}:\n{}",
                exited.log
            )
        });
    assert!(
        line.contains(field),
        "the error does not name `{field}`: {line}"
    );
}

#[test]
fn zero_session_ttl_is_refused() {
    assert_refused(json!({"session_ttl_s": 0}), "session_ttl_s");
}

#[test]
fn unknown_field_is_refused() {
    assert_refused(json!({"max_hunterz": 10}), "max_hunterz");
}

#[test]
fn empty_ticket_secrets_are_refused() {
    assert_refused(json!({"ticket_secrets": []}), "ticket_secrets");
}

#[test]
fn short_ticket_secret_is_refused() {
    assert_refused(json!({"ticket_secrets": ["too-short"]}), "ticket_secrets");
}
