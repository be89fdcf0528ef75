//! Installing the filter safely (issue 14): ticket secrets from the Wasm VM's
//! environment, no silent run without a governor, and a missing governor
//! shown at once.

use huntgate_e2e::metrics::GOVERNOR_UP;
use huntgate_e2e::plugin::{self, HUNTER_HEADER, TICKET_HEADER};
use huntgate_e2e::poll::poll_until;
use huntgate_e2e::{Envoy, Upstream};
use serde_json::json;

use crate::{assert_admitted, join};

const SECRET_VAR: &str = "HUNTGATE_TICKET_SECRET";
const SECRET: &str = "secret-from-the-gateway-environment";

#[test]
fn a_secret_from_the_vm_environment_signs_and_verifies_tickets() {
    let upstream = Upstream::start();
    let from_env = plugin::config(json!({"ticket_secrets": [{"env": SECRET_VAR}]}));
    let envoy = Envoy::start_with_vm_env(&from_env, &upstream, &[(SECRET_VAR, SECRET)]);
    let ticket = assert_admitted(&join(&envoy.client(), "h1", "alice"), "h1", 300);
    // Another proxy with the same secret written inline honours it: the
    // environment's value is what signed it.
    let inline = plugin::config(json!({"ticket_secrets": [SECRET], "max_hunters": 0}));
    let other = Envoy::start(&inline, &upstream);
    let response = other.client().get(
        "/hunts/h1/move",
        &[(HUNTER_HEADER, "alice"), (TICKET_HEADER, &ticket)],
    );
    assert_eq!(
        response.decision().as_deref(),
        Some("session"),
        "{}",
        response.summary()
    );
}

#[test]
fn a_missing_secret_variable_refuses_the_configuration_naming_the_field() {
    let from_env = plugin::config(json!({"ticket_secrets": [{"env": SECRET_VAR}]}));
    let exited = Envoy::start_expecting_exit_with_vm_env(&from_env, &[("OTHER", "x")]);
    assert!(!exited.status.success());
    let line = exited
        .log
        .lines()
        .find(|line| line.contains("huntgate: invalid configuration"))
        .unwrap_or_else(|| panic!("no refusal in the log:\n{}", exited.log));
    assert!(line.contains("ticket_secrets[0].env"), "{line}");
    assert!(line.contains(SECRET_VAR), "{line}");
}

#[test]
fn a_configuration_without_governor_or_standalone_is_refused() {
    let config = plugin::config(json!({"standalone": null}));
    let exited = Envoy::start_expecting_exit(&config);
    assert!(!exited.status.success());
    assert!(
        exited
            .log
            .lines()
            .any(|line| line.contains("invalid configuration") && line.contains("`governor`")),
        "{}",
        exited.log
    );
}

#[test]
fn an_unreachable_governor_is_logged_and_shown_by_huntgate_governor_up() {
    let upstream = Upstream::start();
    // The test bootstrap's `governor` cluster points at a closed port.
    let config =
        plugin::config(json!({"governor": {"cluster": "governor", "poll_interval_ms": 200}}));
    let envoy = Envoy::start(&config, &upstream);
    poll_until(
        "a failed fetch to be logged",
        std::time::Duration::from_secs(20),
        || {
            envoy
                .log()
                .contains("governor fetch from cluster `governor` failed")
                .then_some(())
        },
    );
    assert_eq!(envoy.metrics().get(GOVERNOR_UP, &[]), Some(0.0));
    // Ticket holders are unaffected by the fallback; a join gets a defined answer.
    let response = join(&envoy.client(), "h1", "alice");
    assert!(
        [200, 429].contains(&response.status),
        "{}",
        response.summary()
    );
}
