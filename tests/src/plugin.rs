//! The huntgate plugin configuration the tests hand to Envoy.

use serde_json::{json, Map, Value};

/// Ticket signing secret of the e2e configs (at least 16 bytes).
pub const TICKET_SECRET: &str = "e2e-ticket-secret-0123456789abcdef";

/// `reject.retry_after_s` of [`config`].
pub const RETRY_AFTER_S: u64 = 30;

/// The hunter header of the default configuration.
pub const HUNTER_HEADER: &str = "x-veltrix-hunter";

/// The header carrying a ticket.
pub const TICKET_HEADER: &str = "x-huntgate-ticket";

/// The decision header the upstream sees.
pub const DECISION_HEADER: &str = "x-huntgate-decision";

/// A valid plugin configuration: the e2e defaults with `overrides` merged
/// over them key by key (top level only; `null` removes a key). Without a
/// `governor` override it runs `"standalone": true`.
pub fn config(overrides: Value) -> Value {
    let mut base = json!({
        "standalone": true,
        "mode": "enforce",
        "hunt": {"path_prefix": "/hunts/"},
        "hunter": {"header": HUNTER_HEADER},
        "session_ttl_s": 300,
        "ticket_secrets": [TICKET_SECRET],
        "max_hunters": 50,
        "reject": {"status": 429, "retry_after_s": RETRY_AFTER_S},
        // Every decision marked, so tests can see `session` upstream (the
        // default leaves it out; `null` here restores the default).
        "mark_decisions": ["admitted", "session", "would-reject", "untracked"],
    });
    let Value::Object(overrides) = overrides else {
        panic!("plugin overrides must be a JSON object, got {overrides}");
    };
    let fields: &mut Map<String, Value> = base.as_object_mut().expect("base config is an object");
    if overrides.get("governor").is_some_and(|g| !g.is_null()) {
        fields.remove("standalone");
    }
    for (key, value) in overrides {
        if value.is_null() {
            fields.remove(&key);
        } else {
            fields.insert(key, value);
        }
    }
    base
}

/// `config` with every `{"env": NAME}` ticket secret replaced by
/// [`TICKET_SECRET`]: for running a shipped pluginConfig in an Envoy whose VM
/// has no such variable (tests/tests/e2e/install.rs proves the variable path).
pub fn with_env_secrets_inlined(config: &Value) -> Value {
    let mut config = config.clone();
    if let Some(secrets) = config
        .get_mut("ticket_secrets")
        .and_then(Value::as_array_mut)
    {
        for secret in secrets.iter_mut() {
            if secret.get("env").is_some() {
                *secret = Value::String(TICKET_SECRET.to_string());
            }
        }
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_and_remove_keys() {
        let cfg = config(json!({"max_hunters": 2, "mode": null}));
        assert_eq!(cfg["max_hunters"], 2);
        assert!(cfg.get("mode").is_none());
        assert_eq!(cfg["session_ttl_s"], 300);
    }
}
