//! Live configuration changes through file-based LDS: Envoy swaps the
//! filter configuration while the filter's shared data (who holds a slot)
//! stays.

use huntgate_e2e::plugin;
use huntgate_e2e::{Envoy, Reload, Upstream};
use serde_json::json;

use crate::{
    assert_admitted, assert_hunt_full, assert_passed, hunter, join, with_cookie, with_ticket,
};

#[test]
fn lowering_max_hunters_live_keeps_ticket_holders() {
    let upstream = Upstream::start();
    let mut envoy = Envoy::start_dynamic(&plugin::config(json!({"max_hunters": 50})), &upstream);
    let client = envoy.client();
    let tickets: Vec<String> = (0..50)
        .map(|i| assert_admitted(&join(&client, "live", &hunter(i)), "live", 300))
        .collect();
    assert_hunt_full(&join(&client, "live", &hunter(50)), "live", 50, 50);

    envoy.reconfigure(&plugin::config(json!({"max_hunters": 10})));

    // New connections meet the new configuration: a newcomer sees limit 10,
    // while the counts survived the reload (still 50 active).
    let client = envoy.client();
    assert_hunt_full(&join(&client, "live", &hunter(51)), "live", 10, 50);
    for (i, ticket) in tickets.iter().enumerate() {
        let response = if i % 2 == 0 {
            with_ticket(&client, "live", &hunter(i), ticket)
        } else {
            with_cookie(&client, "live", &hunter(i), ticket)
        };
        assert_passed(&response, "session");
    }
    assert_hunt_full(&join(&client, "live", &hunter(52)), "live", 10, 50);
}

#[test]
fn refused_live_update_keeps_previous_configuration() {
    let upstream = Upstream::start();
    let mut envoy = Envoy::start_dynamic(&plugin::config(json!({"max_hunters": 1})), &upstream);
    let client = envoy.client();
    assert_admitted(&join(&client, "keep", "alice"), "keep", 300);

    let outcome = envoy.try_reconfigure(&plugin::config(
        json!({"max_hunters": 5, "session_ttl_s": 0}),
    ));
    assert_eq!(
        outcome,
        Reload::Rejected,
        "Envoy applied an invalid plugin configuration"
    );
    let log = envoy.log();
    assert!(
        log.contains("session_ttl_s"),
        "Envoy's log does not name the invalid field `session_ttl_s`"
    );

    // Still max_hunters 1.
    assert_hunt_full(&join(&envoy.client(), "keep", "bob"), "keep", 1, 1);
}
