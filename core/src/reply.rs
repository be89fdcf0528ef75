//! Local replies the filter sends instead of forwarding: JSON bodies users and
//! game clients can parse.

use crate::json::ObjectWriter;

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

fn json_reply(status: u32, body: ObjectWriter) -> Reply {
    Reply {
        status,
        headers: vec![("content-type", "application/json".to_string())],
        body: body.finish(),
    }
}

/// `{"error": error, "hunt": hunt}`.
fn hunt_error(error: &str, hunt: &str) -> ObjectWriter {
    ObjectWriter::new()
        .string("error", error)
        .string("hunt", hunt)
}

/// The reply to a request refused before admission (400, 401 or 404).
pub fn refusal(refusal: &Refusal) -> Reply {
    let bad = |reason: &str| {
        json_reply(
            400,
            ObjectWriter::new()
                .string("error", "bad_request")
                .string("reason", reason),
        )
    };
    match refusal {
        Refusal::InvalidHuntId => bad("invalid_hunt_id"),
        Refusal::AmbiguousHuntPath => bad("ambiguous_hunt_path"),
        Refusal::DuplicateHuntHeader => bad("duplicate_hunt_header"),
        Refusal::DuplicateHunterHeader => bad("duplicate_hunter_header"),
        Refusal::InvalidHunterId => bad("invalid_hunter_id"),
        Refusal::HunterRequired { hunt } => json_reply(401, hunt_error("hunter_required", hunt)),
        Refusal::UnknownHunt { hunt } => json_reply(404, hunt_error("unknown_hunt", hunt)),
    }
}

/// The reply to a new join when the hunt is at its limit.
pub fn hunt_full(hunt: &str, limit: u32, active: u32, status: u32, retry_after_s: u32) -> Reply {
    let mut reply = json_reply(
        status,
        ObjectWriter::new()
            .number("active", active.into())
            .string("error", "hunt_full")
            .string("hunt", hunt)
            .number("limit", limit.into())
            .number("retry_after_s", retry_after_s.into()),
    );
    reply
        .headers
        .push(("retry-after", retry_after_s.to_string()));
    reply
}

/// 503 for a new hunt past `max_tracked_hunts` when `untracked_hunts` is `reject`.
pub fn hunt_capacity(hunt: &str, retry_after_s: u32) -> Reply {
    let mut reply = json_reply(503, hunt_error("hunt_capacity", hunt));
    reply
        .headers
        .push(("retry-after", retry_after_s.to_string()));
    reply
}

/// 503 when the session store could not be updated for a new join.
pub fn admission_unavailable(hunt: &str, retry_after_s: u32) -> Reply {
    let mut reply = json_reply(503, hunt_error("admission_unavailable", hunt));
    reply
        .headers
        .push(("retry-after", retry_after_s.to_string()));
    reply
}

/// 200 to a leave request whose session ended; the ticket cookie is cleared.
pub fn session_ended(hunt: &str, cookie_prefix: &str) -> Reply {
    let mut reply = json_reply(
        200,
        ObjectWriter::new()
            .boolean("ended", true)
            .string("hunt", hunt),
    );
    reply.headers.push((
        "set-cookie",
        format!("{cookie_prefix}{hunt}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"),
    ));
    reply
}

/// 403 to a leave request without a valid ticket of a live session.
pub fn no_session(hunt: &str) -> Reply {
    json_reply(403, hunt_error("no_session", hunt))
}

/// 503 when a leave request's session could not be ended (the session store
/// failed, or the ended-session list is full); the session stays until its TTL.
pub fn session_end_unavailable(hunt: &str, retry_after_s: u32) -> Reply {
    let mut reply = json_reply(503, hunt_error("session_end_unavailable", hunt));
    reply
        .headers
        .push(("retry-after", retry_after_s.to_string()));
    reply
}

/// Where a queued hunter stands, for its reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedReply<'a> {
    /// Canonical hunt id.
    pub hunt: &'a str,
    /// 1-based position in the hunt's queue.
    pub position: u32,
    /// Estimated wait in seconds (`None`: not measured yet).
    pub eta_s: Option<u32>,
    /// `Retry-After` (s).
    pub retry_after_s: u32,
    /// The queue ticket.
    pub ticket: &'a str,
    /// Seconds the queue ticket still lives (its cookie's `Max-Age`).
    pub ticket_ttl_s: u64,
}

/// The built-in waiting page (see [`queued`] for its placeholders).
pub const WAITING_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{{retry_after_s}}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Waiting to join {{hunt}}</title>
<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;text-align:center}
#position{font-size:3rem;font-weight:bold}</style></head>
<body><h1>The hunt {{hunt}} is full</h1>
<p>You are number</p><p id="position">{{position}}</p><p>in the queue.</p>
<p id="eta">Estimated wait: {{eta}}</p>
<p>This page checks again every {{retry_after_s}} s and lets you in as soon as a place frees. Keep it open: leaving it gives your place up.</p>
</body></html>
"#;

fn eta_text(eta_s: Option<u32>) -> String {
    match eta_s {
        None => "not known yet".to_string(),
        Some(s) if s < 60 => format!("about {s} s"),
        Some(s) => format!("about {} min", s.div_ceil(60)),
    }
}

/// The reply to a join that waits in the hunt's queue: `status` (the reject
/// status) with `Retry-After`, the queue ticket in `x-huntgate-queue` and its
/// cookie, and either the JSON body
/// `{"error":"queued","hunt","position","eta_s","retry_after_s"}` or, with
/// `html`, the waiting page `page` (else [`WAITING_PAGE`]) with `{{hunt}}`,
/// `{{position}}`, `{{eta_s}}` (a number, or `unknown`), `{{eta}}` (in words)
/// and `{{retry_after_s}}` filled in, plus a `refresh` header.
pub fn queued(queued: &QueuedReply<'_>, status: u32, html: Option<Option<&str>>) -> Reply {
    let mut reply = match html {
        None => json_reply(status, {
            let body = ObjectWriter::new().string("error", "queued");
            let body = match queued.eta_s {
                Some(eta_s) => body.number("eta_s", eta_s.into()),
                None => body.raw("eta_s", "null"),
            };
            body.string("hunt", queued.hunt)
                .number("position", queued.position.into())
                .number("retry_after_s", queued.retry_after_s.into())
        }),
        Some(page) => {
            let eta_s = queued
                .eta_s
                .map_or_else(|| "unknown".to_string(), |s| s.to_string());
            let body = page
                .unwrap_or(WAITING_PAGE)
                .replace("{{hunt}}", queued.hunt)
                .replace("{{position}}", &queued.position.to_string())
                .replace("{{eta_s}}", &eta_s)
                .replace("{{eta}}", &eta_text(queued.eta_s))
                .replace("{{retry_after_s}}", &queued.retry_after_s.to_string());
            Reply {
                status,
                headers: vec![
                    ("content-type", "text/html; charset=utf-8".to_string()),
                    ("cache-control", "no-store".to_string()),
                    ("refresh", queued.retry_after_s.to_string()),
                ],
                body,
            }
        }
    };
    reply
        .headers
        .push(("retry-after", queued.retry_after_s.to_string()));
    reply
        .headers
        .push((crate::request::QUEUE_HEADER, queued.ticket.to_string()));
    reply.headers.push((
        "set-cookie",
        format!(
            "{}{}={}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax",
            crate::request::QUEUE_COOKIE_PREFIX,
            queued.hunt,
            queued.ticket,
            queued.ticket_ttl_s
        ),
    ));
    reply
}
