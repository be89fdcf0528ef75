//! Local replies the filter sends instead of forwarding: JSON bodies users and
//! game clients can parse.

use serde_json::json;

use crate::request::Refusal;

/// A reply sent by the filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u32,
    /// Extra response headers (content-type is always JSON).
    pub headers: Vec<(&'static str, String)>,
    /// JSON body.
    pub body: String,
}

fn json_reply(status: u32, body: serde_json::Value) -> Reply {
    Reply {
        status,
        headers: vec![("content-type", "application/json".to_string())],
        body: body.to_string(),
    }
}

/// The reply to a request refused before admission (400, 401 or 404).
pub fn refusal(refusal: &Refusal) -> Reply {
    let bad = |reason: &str| json_reply(400, json!({"error": "bad_request", "reason": reason}));
    match refusal {
        Refusal::InvalidHuntId => bad("invalid_hunt_id"),
        Refusal::AmbiguousHuntPath => bad("ambiguous_hunt_path"),
        Refusal::DuplicateHuntHeader => bad("duplicate_hunt_header"),
        Refusal::DuplicateHunterHeader => bad("duplicate_hunter_header"),
        Refusal::InvalidHunterId => bad("invalid_hunter_id"),
        Refusal::HunterRequired { hunt } => {
            json_reply(401, json!({"error": "hunter_required", "hunt": hunt}))
        }
        Refusal::UnknownHunt { hunt } => {
            json_reply(404, json!({"error": "unknown_hunt", "hunt": hunt}))
        }
    }
}

/// The reply to a new join when the hunt is at its limit.
pub fn hunt_full(hunt: &str, limit: u32, active: u32, status: u32, retry_after_s: u32) -> Reply {
    let mut reply = json_reply(
        status,
        json!({
            "error": "hunt_full",
            "hunt": hunt,
            "limit": limit,
            "active": active,
            "retry_after_s": retry_after_s,
        }),
    );
    reply
        .headers
        .push(("retry-after", retry_after_s.to_string()));
    reply
}

/// 503 for a new hunt past `max_tracked_hunts` when `untracked_hunts` is `reject`.
pub fn hunt_capacity(hunt: &str, retry_after_s: u32) -> Reply {
    let mut reply = json_reply(503, json!({"error": "hunt_capacity", "hunt": hunt}));
    reply
        .headers
        .push(("retry-after", retry_after_s.to_string()));
    reply
}

/// 503 when the session store could not be updated for a new join.
pub fn admission_unavailable(hunt: &str, retry_after_s: u32) -> Reply {
    let mut reply = json_reply(503, json!({"error": "admission_unavailable", "hunt": hunt}));
    reply
        .headers
        .push(("retry-after", retry_after_s.to_string()));
    reply
}
