//! Plugin configuration parser and compiler (`Config::from_json_with_env`).
//!
//! The input is the plugin configuration JSON as an operator (or an attacker
//! with write access to it) might write it. Checks:
//! - parsing and compiling never panic; a refusal always names a field;
//! - whatever compiles is within the filter's own bounds (TTL, hunt and hunter
//!   caps, reject status, tracked hunts) and its ids and header names are canonical;
//! - whatever compiles works: a ticket issued with its keys verifies for its own
//!   hunt, and the canonical request for a listed hunt (its path under the
//!   prefix, or its hunt header) classifies as that hunt with its settings;
//! - compiling is deterministic (the same bytes compile to the same settings).
#![no_main]

use huntgate_core::config::{
    Config, HuntSource, HunterSource, MAX_HUNTERS_LIMIT, MAX_SESSION_TTL_S, MAX_TRACKED_HUNTS_LIMIT,
};
use huntgate_core::hunt_id::normalize_hunt_id;
use huntgate_core::request::{classify, Classified};
use libfuzzer_sys::fuzz_target;

/// `{"env": NAME}` secrets: `HG_SECRET` is set (long enough), `HG_SHORT` too short, others unset.
fn env(name: &str) -> Option<String> {
    match name {
        "HG_SECRET" => Some("environment-secret-0123456789".to_string()),
        "HG_SHORT" => Some("short".to_string()),
        _ => None,
    }
}

fn header_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

fuzz_target!(|data: &[u8]| {
    let config = match Config::from_json_with_env(data, &env) {
        Ok(config) => config,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    // Bounds.
    assert!(config.session_ttl_s >= 1 && u64::from(config.session_ttl_s) <= MAX_SESSION_TTL_S);
    assert!(config.default_hunt.max_hunters <= MAX_HUNTERS_LIMIT);
    assert!((200..=599).contains(&config.reject_status));
    assert!(config.max_tracked_hunts >= 1 && config.max_tracked_hunts <= MAX_TRACKED_HUNTS_LIMIT);
    assert!(config.hunts.len() <= config.max_tracked_hunts as usize);
    for (hunt, settings) in &config.hunts {
        assert_eq!(normalize_hunt_id(hunt).as_ref(), Ok(hunt));
        assert!(settings.max_hunters <= MAX_HUNTERS_LIMIT);
        assert_eq!(config.hunt_settings(hunt), Some(*settings));
    }
    match &config.hunt_source {
        HuntSource::PathPrefix(segments) => {
            assert!(!segments.is_empty());
            for s in segments {
                assert!(!s.is_empty() && s != "." && s != "..");
                assert!(s.bytes().all(|b| !b.is_ascii_uppercase()
                    && (b.is_ascii_alphanumeric() || b"-._~".contains(&b))));
            }
        }
        HuntSource::Header(name) => assert!(header_name_ok(name), "{name:?}"),
    }
    if let HunterSource::Header(name) = &config.hunter_source {
        assert!(header_name_ok(name), "{name:?}");
        assert_ne!(config.hunt_source, HuntSource::Header(name.clone()));
    }
    if let Some(feed) = &config.governor {
        assert!(feed.path.starts_with('/'));
        assert!((100..=60_000).contains(&feed.poll_interval_ms));
        assert!((100..=60_000).contains(&feed.timeout_ms));
        assert!(feed.long_poll_s <= 60);
    }

    // Deterministic.
    let again = Config::from_json_with_env(data, &env);
    let again = again.unwrap_or_else(|e| panic!("second compile failed: {e}"));
    assert_eq!(again.hunts, config.hunts);
    assert_eq!(again.hunt_source, config.hunt_source);
    assert_eq!(again.hunter_source, config.hunter_source);
    assert_eq!(again.session_ttl_s, config.session_ttl_s);

    // It works: tickets and the canonical request of each listed hunt (a few).
    let now_ms = 1_700_000_000_000u64;
    let expires_s = huntgate_core::ticket::session_expiry_s(now_ms, config.session_ttl_s);
    for (hunt, settings) in config.hunts.iter().take(4) {
        let ticket = config.ticket_keys.issue(hunt, "hunter-1", expires_s);
        let claims = config
            .ticket_keys
            .verify(&ticket, hunt, now_ms, config.session_ttl_s);
        assert_eq!(claims.map(|c| c.hunter), Ok("hunter-1".to_string()));

        let (hunt_header, hunt_value) = match &config.hunt_source {
            HuntSource::PathPrefix(segments) => (
                ":path".to_string(),
                format!("/{}/{hunt}/join", segments.join("/")),
            ),
            HuntSource::Header(name) => (name.clone(), hunt.clone()),
        };
        let mut headers = vec![(hunt_header, hunt_value)];
        if let HunterSource::Header(name) = &config.hunter_source {
            headers.push((name.clone(), "hunter-1".to_string()));
        }
        headers.push(("x-huntgate-ticket".to_string(), ticket.clone()));
        match classify(&config, &headers) {
            Classified::Hunt(request) => {
                assert_eq!(&request.hunt, hunt);
                assert_eq!(request.settings, *settings);
                assert_eq!(request.tickets.iter().next(), Some(ticket.as_str()));
            }
            other => panic!("canonical request for {hunt:?} classified as {other:?}"),
        }
    }
});
