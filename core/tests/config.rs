//! Configuration: defaults, and refusals that name the field at fault.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use huntgate_core::config::{Config, HuntSource, HunterSource, Mode, UnlistedPolicy};

const SECRET: &str = "0123456789abcdef";

fn refused(json: &str) -> (String, String) {
    let err = Config::from_json(json.as_bytes()).expect_err("config should be refused");
    (err.field, err.problem)
}

#[test]
fn minimal_config_gets_documented_defaults() {
    let config = Config::from_json(
        format!(r#"{{"standalone":true,"ticket_secrets":["{SECRET}"]}}"#).as_bytes(),
    )
    .unwrap();
    assert_eq!(
        config.hunt_source,
        HuntSource::PathPrefix(vec!["hunts".into()])
    );
    assert_eq!(
        config.hunter_source,
        HunterSource::Header("x-veltrix-hunter".into())
    );
    assert_eq!(config.session_ttl_s, 300);
    assert_eq!(config.default_hunt.max_hunters, 2000);
    assert_eq!(config.default_hunt.mode, Mode::Enforce);
    assert_eq!(config.reject_status, 429);
    assert_eq!(config.retry_after_s, 30);
    assert_eq!(config.max_tracked_hunts, 1024);
    assert_eq!(config.unlisted, UnlistedPolicy::Admit);
}

#[test]
fn per_hunt_overrides_inherit_what_they_do_not_set() {
    let config = Config::from_json(
        format!(
            r#"{{"standalone":true,"ticket_secrets":["{SECRET}"],"mode":"shadow","max_hunters":7,
                "hunts":{{"Hunt-001":{{"max_hunters":50}},"h2":{{"mode":"enforce"}}}}}}"#
        )
        .as_bytes(),
    )
    .unwrap();
    let h1 = config.hunt_settings("hunt-001").unwrap();
    assert_eq!((h1.max_hunters, h1.mode), (50, Mode::Shadow));
    let h2 = config.hunt_settings("h2").unwrap();
    assert_eq!((h2.max_hunters, h2.mode), (7, Mode::Enforce));
    let other = config.hunt_settings("other").unwrap();
    assert_eq!((other.max_hunters, other.mode), (7, Mode::Shadow));
}

#[test]
fn each_bad_field_is_named() {
    let cases: &[(&str, &str)] = &[
        (
            r#"{"standalone":true,"ticket_secrets":["0123456789abcdef"],"session_ttl_s":0}"#,
            "session_ttl_s",
        ),
        (
            r#"{"standalone":true,"ticket_secrets":[]}"#,
            "ticket_secrets",
        ),
        (
            r#"{"standalone":true,"ticket_secrets":["short"]}"#,
            "ticket_secrets[0]",
        ),
        (
            r#"{"standalone":true,"ticket_secrets":["0123456789abcdef"],"max_huntrs":3}"#,
            "max_huntrs",
        ),
        (
            r#"{"standalone":true,"ticket_secrets":["0123456789abcdef"],"mode":"log"}"#,
            "mode",
        ),
        (
            r#"{"standalone":true,"ticket_secrets":["0123456789abcdef"],"max_hunters":-1}"#,
            "max_hunters",
        ),
        (
            r#"{"standalone":true,"ticket_secrets":["0123456789abcdef"],"hunts":{"bad id":{}}}"#,
            "hunts.bad id",
        ),
        (
            r#"{"standalone":true,"ticket_secrets":["0123456789abcdef"],"hunts":{"h":{"max_hunters":"x"}}}"#,
            "hunts.h.max_hunters",
        ),
        (
            r#"{"standalone":true,"ticket_secrets":["0123456789abcdef"],"hunts":{"H":{},"h":{}}}"#,
            "hunts.h",
        ),
        (
            r#"{"standalone":true,"ticket_secrets":["0123456789abcdef"],"reject":{"status":99}}"#,
            "reject.status",
        ),
        // Issue 9 #5: a hunter header that is the hunt header or one the filter uses.
        (
            r#"{"standalone":true,"ticket_secrets":["0123456789abcdef"],"hunt":{"header":"x-id"},"hunter":{"header":"X-Id"}}"#,
            "hunter.header",
        ),
        (
            r#"{"standalone":true,"ticket_secrets":["0123456789abcdef"],"hunter":{"header":"x-huntgate-ticket"}}"#,
            "hunter.header",
        ),
        (
            r#"{"standalone":true,"ticket_secrets":["0123456789abcdef"],"hunter":{"header":"cookie"}}"#,
            "hunter.header",
        ),
        (
            r#"{"standalone":true,"ticket_secrets":["0123456789abcdef"],"hunt":{"header":"x-huntgate-decision"}}"#,
            "hunt.header",
        ),
        (
            r#"{"standalone":true,"ticket_secrets":["0123456789abcdef"],"hunter":{"anonymous":false}}"#,
            "hunter.anonymous",
        ),
        (
            r#"{"standalone":true,"ticket_secrets":["0123456789abcdef"],"hunter":{"header":""}}"#,
            "hunter.header",
        ),
        (
            r#"{"standalone":true,"ticket_secrets":["0123456789abcdef"],"hunt":{"path_prefix":"hunts"}}"#,
            "hunt.path_prefix",
        ),
        (
            r#"{"standalone":true,"ticket_secrets":["0123456789abcdef"],"hunt":{"path_prefix":"/a/../b"}}"#,
            "hunt.path_prefix",
        ),
        (
            r#"{"standalone":true,"ticket_secrets":["0123456789abcdef"],"max_tracked_hunts":0}"#,
            "max_tracked_hunts",
        ),
        (
            r#"{"standalone":true,"ticket_secrets":["0123456789abcdef"],"max_tracked_hunts":1,"hunts":{"a":{},"b":{}}}"#,
            "hunts",
        ),
    ];
    for (json, field) in cases {
        let (got, problem) = refused(json);
        assert_eq!(&got, field, "{json}: {problem}");
        assert!(!problem.is_empty());
    }
}

#[test]
fn unknown_field_message_names_the_unknown_field() {
    let (_, problem) =
        refused(r#"{"standalone":true,"ticket_secrets":["0123456789abcdef"],"max_huntrs":3}"#);
    assert!(problem.contains("max_huntrs"), "{problem}");
}

#[test]
fn missing_secrets_and_garbage_are_refused() {
    assert!(refused("{}").1.contains("ticket_secrets"));
    assert_eq!(refused("not json").0, ".");
    assert_eq!(
        refused(r#"{"standalone":true,"ticket_secrets":["0123456789abcdef"]} x"#).0,
        "."
    );
}

#[test]
fn governor_documents_are_held_to_the_filters_own_bounds() {
    use huntgate_core::config::HuntSettings;
    use huntgate_core::throttle::ThrottleTable;
    // Issue 9 #5: max_hunters up to u32::MAX was accepted; hunt keys were case-sensitive.
    let too_many = br#"{"hunts":{"h1":{"ratio":1.0,"max_hunters":10000001}}}"#;
    let err = ThrottleTable::decode(too_many).unwrap_err();
    assert!(err.contains("hunts.h1.max_hunters"), "{err}");
    let table = ThrottleTable::decode(br#"{"hunts":{"H1":{"ratio":0.5}}}"#).unwrap();
    let settings = HuntSettings {
        max_hunters: 10,
        mode: huntgate_core::config::Mode::Enforce,
    };
    assert_eq!(table.limit("h1", &settings), 5);
    let twice = br#"{"hunts":{"H1":{"ratio":0.5},"h1":{"ratio":0.1}}}"#;
    assert!(ThrottleTable::decode(twice).unwrap_err().contains("twice"));
    let bad_id = br#"{"hunts":{"a b":{"ratio":0.5}}}"#;
    assert!(ThrottleTable::decode(bad_id).is_err());
}

#[test]
fn the_untracked_default_refuses_what_it_cannot_count() {
    let config =
        Config::from_json(br#"{"standalone":true,"ticket_secrets":["0123456789abcdef"]}"#).unwrap();
    assert_eq!(
        config.untracked,
        huntgate_core::config::UntrackedPolicy::Reject
    );
}

#[test]
fn a_configuration_without_a_governor_must_say_standalone() {
    // Issue 14 #4: a missing governor block is a mistake unless it is said.
    let (field, problem) = refused(r#"{"ticket_secrets":["0123456789abcdef"]}"#);
    assert_eq!(field, "governor");
    assert!(problem.contains("standalone"), "{problem}");
    let both =
        r#"{"standalone":true,"ticket_secrets":["0123456789abcdef"],"governor":{"cluster":"g"}}"#;
    assert_eq!(refused(both).0, "standalone");
    assert!(Config::from_json(
        br#"{"ticket_secrets":["0123456789abcdef"],"governor":{"cluster":"g"}}"#
    )
    .is_ok());
}

#[test]
fn ticket_secrets_can_come_from_the_vm_environment() {
    // Issue 14 #3: secrets out of manifests.
    let json =
        br#"{"standalone":true,"ticket_secrets":[{"env":"HG_SECRET"},"inline-secret-0123456789"]}"#;
    let env = |name: &str| (name == "HG_SECRET").then(|| "from-the-environment-0123".to_string());
    let config = Config::from_json_with_env(json, &env).unwrap();
    let ticket = config.ticket_keys.issue("h1", "alice", 1_900_000_100);
    let inline_only =
        Config::from_json(br#"{"standalone":true,"ticket_secrets":["from-the-environment-0123"]}"#)
            .unwrap();
    assert!(
        inline_only
            .ticket_keys
            .verify(&ticket, "h1", 1_900_000_000_000, 300)
            .is_ok(),
        "the first secret (from the environment) signs"
    );
    let missing = Config::from_json_with_env(json, &|_| None).unwrap_err();
    assert_eq!(missing.field, "ticket_secrets[0].env");
    assert!(missing.problem.contains("HG_SECRET"), "{missing}");
    let short = Config::from_json_with_env(json, &|_| Some("short".to_string())).unwrap_err();
    assert_eq!(short.field, "ticket_secrets[0].env");
}
