//! Plugin configuration: the JSON schema users write, its validation, and the
//! compiled, immutable [`Config`] the filter runs on.
//!
//! Parsing happens once per `on_configure`; every error names the field and
//! the problem so Envoy's log tells the operator exactly what to fix.

use std::collections::BTreeMap;
use std::fmt;

use hashbrown::HashMap;

use crate::hunt_id::{normalize_hunt_id, HuntIdError};
use crate::throttle::{StalePolicy, Staleness};
use crate::ticket::TicketKeys;

/// Smallest accepted ticket secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;
/// Largest accepted `session_ttl_s` (one week): tickets carry 32-bit expiries.
pub const MAX_SESSION_TTL_S: u64 = 7 * 24 * 3600;
/// Largest accepted `max_tracked_hunts`: bounds the shared-data key space.
pub const MAX_TRACKED_HUNTS_LIMIT: u32 = 65_536;
/// Largest accepted `max_hunters`.
pub const MAX_HUNTERS_LIMIT: u32 = 10_000_000;

/// A configuration the filter refuses, with the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the offending field (`hunts.h1.max_hunters`), or `.` for the document.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "field `{}`: {}", self.field, self.problem)
    }
}

impl std::error::Error for ConfigError {}

fn field_error(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Whether the filter rejects or only reports what it would reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Reject joins past the limit.
    #[default]
    Enforce,
    /// Never reject: mark would-be rejections upstream and count them.
    Shadow,
}

/// Where the hunt id of a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HuntSourceSpec {
    /// The path segment after this prefix (`/hunts/{hunt}/...`).
    PathPrefix(String),
    /// A request header carrying the hunt id.
    Header(String),
}

/// Where the hunter identity of a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HunterSourceSpec {
    /// A request header set by authentication (e.g. jwt_authn `claim_to_headers`).
    Header(String),
    /// `true`: the filter mints a session id for requests without a ticket.
    Anonymous(bool),
}

/// Per-hunt override, as written in `hunts`.
#[derive(Debug, Clone, Default)]
pub struct HuntOverrideSpec {
    /// Maximum concurrent hunters for this hunt (before the throttle ratio).
    pub max_hunters: Option<u32>,
    /// Mode for this hunt, overriding the global `mode`.
    pub mode: Option<Mode>,
    /// This hunt's waiting room; a field left out inherits the default `waiting_room`.
    pub waiting_room: Option<WaitingRoomSpec>,
}

/// A waiting room as written in `waiting_room` (the default) or
/// `hunts.<id>.waiting_room` (where every field left out inherits the default's).
#[derive(Debug, Clone, Default)]
pub struct WaitingRoomSpec {
    /// `true`: a join of the full hunt gets a place in its queue instead of a
    /// bare 429 (default `false`).
    pub enabled: Option<bool>,
    /// Most hunters queued at once per hunt and Envoy process, 1–10000 (default
    /// 1000); past it a join gets today's 429 `hunt_full`.
    pub max_queue: Option<u32>,
    /// Seconds a queue ticket (and its place) lives after the hunter first queued,
    /// 1–86400 (default 1800).
    pub queue_ttl_s: Option<u32>,
    /// `Retry-After` of a queued reply, 1–300 s (default 5): the waiting page
    /// refreshes itself after it.
    pub retry_after_s: Option<u32>,
    /// A queued hunter not back within `retry_after_s + grace_s` seconds of its
    /// last try drops out (counted as abandoned), 0–3600 (default 10).
    pub grace_s: Option<u32>,
    /// HTML template of the waiting page sent to requests that accept
    /// `text/html` (placeholders `{{hunt}}`, `{{position}}`, `{{eta_s}}`,
    /// `{{retry_after_s}}`); default: the built-in page. At most 65536 bytes.
    pub page: Option<String>,
}

/// The reply sent when a hunt is full.
#[derive(Debug, Clone)]
pub struct RejectSpec {
    /// HTTP status of the rejection (default 429).
    pub status: u32,
    /// Seconds sent in `Retry-After` and the JSON body (default 30).
    pub retry_after_s: u32,
}

impl Default for RejectSpec {
    fn default() -> Self {
        Self {
            status: default_reject_status(),
            retry_after_s: default_retry_after_s(),
        }
    }
}

/// A decision the filter can mark on the upstream request (`x-huntgate-decision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A join admitted (or a live session re-joined, or renewed).
    Admitted,
    /// A valid ticket, not due for renewal (the hot path).
    Session,
    /// Shadow mode: enforce mode would have rejected it.
    WouldReject,
    /// Passed without a hunt slot (`untracked_hunts: pass`).
    Untracked,
}

fn default_mark_decisions() -> Vec<Decision> {
    vec![
        Decision::Admitted,
        Decision::WouldReject,
        Decision::Untracked,
    ]
}

/// The compiled `mark_decisions`: which decision values are written upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecisionMarks {
    admitted: bool,
    session: bool,
    would_reject: bool,
    untracked: bool,
}

impl DecisionMarks {
    fn new(decisions: &[Decision]) -> Self {
        let has = |d: Decision| decisions.contains(&d);
        Self {
            admitted: has(Decision::Admitted),
            session: has(Decision::Session),
            would_reject: has(Decision::WouldReject),
            untracked: has(Decision::Untracked),
        }
    }

    /// Whether the decision value `value` (`crate::engine::decision`) is written upstream.
    pub fn marks(&self, value: &str) -> bool {
        match value {
            crate::engine::decision::ADMITTED => self.admitted,
            crate::engine::decision::SESSION => self.session,
            crate::engine::decision::WOULD_REJECT => self.would_reject,
            crate::engine::decision::UNTRACKED => self.untracked,
            _ => true,
        }
    }
}

/// What happens to a hunt seen for the first time once `max_tracked_hunts` are tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UntrackedPolicy {
    /// Let its requests through without admission control (counted in `huntgate_untracked_hunt`).
    Pass,
    /// Answer 503 `hunt_capacity` (the default: nothing the filter cannot count is admitted).
    #[default]
    Reject,
}

/// What happens to a hunt that is not listed in `hunts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnlistedPolicy {
    /// Admit under the default `max_hunters`.
    #[default]
    Admit,
    /// Answer 404 `unknown_hunt`.
    Reject,
}

/// How sessions end before their TTL, as written in `session_end`.
#[derive(Debug, Clone)]
pub struct SessionEndSpec {
    /// Response header by which the upstream ends the hunter's session (value
    /// `end`), e.g. `x-huntgate-session`; removed from every hunt response. Off
    /// by default (`null`): reading it costs a host call on every hunt response.
    pub header: Option<String>,
    /// The path segment of the client's leave request, `POST
    /// {path_prefix}{hunt}/{leave_path}` (with `hunt.header`: `POST
    /// /{leave_path}`); `null` turns leave requests off (default `leave`).
    pub leave_path: Option<String>,
}

impl Default for SessionEndSpec {
    fn default() -> Self {
        Self {
            header: None,
            leave_path: default_leave_path(),
        }
    }
}

fn default_leave_path() -> Option<String> {
    Some("leave".to_string())
}

/// Longest accepted `session_end.leave_path`.
pub const MAX_LEAVE_PATH_LEN: usize = 64;

/// Compiled `session_end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEnd {
    /// Lowercased response header whose value `end` ends the session, if on.
    pub header: Option<String>,
    /// The leave request's path, `{hunt}` standing for the hunt segment
    /// (`/hunts/{hunt}/leave`), or `None` when leave requests are off.
    pub leave: Option<LeavePath>,
}

/// The path of a leave request (compared ASCII-case-insensitively, query ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeavePath {
    /// Before the hunt segment (`/hunts/`), or the whole path with a hunt header.
    pub before: String,
    /// After the hunt segment (`/leave`); empty with a hunt header.
    pub after: String,
    /// Whether the path holds the hunt segment (`hunt.path_prefix`).
    pub names_hunt: bool,
}

/// What the filter does once the governor's document is older than `max_stale_s`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OnStaleSpec {
    /// No limit: every join is admitted (sessions are still counted).
    FailOpen,
    /// No new joins; ticket holders keep playing.
    FailClosed,
    /// This ratio (0–1) of max_hunters.
    Ratio(f64),
}

impl Default for OnStaleSpec {
    fn default() -> Self {
        OnStaleSpec::Ratio(1.0)
    }
}

/// Where the filter fetches throttle ratios from (the governor).
#[derive(Debug, Clone)]
pub struct GovernorSpec {
    /// Envoy cluster of the governor (must exist in the proxy).
    pub cluster: String,
    /// `:authority` of the fetch (default: the cluster name).
    pub authority: Option<String>,
    /// Path of the throttle document (default `/v1/throttle`).
    pub path: String,
    /// Plain polling period in ms, 100–60000 (default 1000); also the retry delay after a failure.
    pub poll_interval_ms: u32,
    /// Long-poll wait in seconds, 0–60 (default 25; 0 = plain polling).
    pub long_poll_s: u32,
    /// Timeout of a plain fetch in ms (default 2000); long polls add `long_poll_s`.
    pub timeout_ms: u32,
    /// Seconds the last good document stays in force without a successful fetch (default 30).
    pub max_stale_s: u32,
    /// The fallback once stale: `{"ratio": R}` (default `{"ratio": 1.0}`), `"fail_open"` or `"fail_closed"`.
    pub on_stale: OnStaleSpec,
    /// `true`: exchange leases with the governor (report sessions and demand,
    /// enforce this proxy's share of each governed hunt's fleet-wide limit).
    pub leases: bool,
    /// Path of the lease exchange (default `/v1/leases`).
    pub leases_path: String,
    /// This proxy's identity in the lease exchange (default: the Envoy node id,
    /// else a random id per Envoy process).
    pub proxy_id: Option<String>,
    /// New joins a proxy admits per governed hunt while it holds no live lease
    /// (before its first grant, after a lease ran out unrenewed); default 0.
    pub safe_share: u32,
}

impl GovernorSpec {
    /// Every field at its documented default, `cluster` empty (it is required).
    #[inline(never)]
    pub fn defaults() -> Self {
        Self {
            cluster: String::new(),
            authority: None,
            path: default_governor_path(),
            poll_interval_ms: default_poll_interval_ms(),
            long_poll_s: default_long_poll_s(),
            timeout_ms: default_fetch_timeout_ms(),
            max_stale_s: default_max_stale_s(),
            on_stale: OnStaleSpec::default(),
            leases: false,
            leases_path: default_leases_path(),
            proxy_id: None,
            safe_share: 0,
        }
    }
}

fn default_leases_path() -> String {
    "/v1/leases".to_string()
}

/// Longest accepted `governor.proxy_id`.
pub const MAX_PROXY_ID_LEN: usize = 128;

/// Compiled lease settings (`governor.leases: true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    /// Path of the exchange.
    pub path: String,
    /// The configured identity, if any (else the node id or a random one).
    pub proxy_id: Option<String>,
    /// Joins admitted per governed hunt without a live lease.
    pub safe_share: u32,
}

fn default_governor_path() -> String {
    "/v1/throttle".to_string()
}
fn default_poll_interval_ms() -> u32 {
    1000
}
fn default_long_poll_s() -> u32 {
    25
}
fn default_fetch_timeout_ms() -> u32 {
    2000
}
fn default_max_stale_s() -> u32 {
    30
}

/// Compiled governor feed settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GovernorFeed {
    /// Envoy cluster name.
    pub cluster: String,
    /// `:authority` header.
    pub authority: String,
    /// Document path.
    pub path: String,
    /// Polling period (and retry delay) in ms.
    pub poll_interval_ms: u32,
    /// Long-poll wait in seconds (0: plain polling).
    pub long_poll_s: u32,
    /// Plain fetch timeout in ms.
    pub timeout_ms: u32,
    /// Staleness rule.
    pub staleness: Staleness,
    /// The lease exchange, when on.
    pub leases: Option<LeaseSettings>,
}

/// One entry of `ticket_secrets`: the secret itself, or where to read it.
#[derive(Debug, Clone)]
pub enum SecretSpec {
    /// The secret, written inline (works, but anyone who can read the
    /// configuration can mint tickets).
    Inline(String),
    /// The secret from an environment variable of the Wasm VM (Envoy
    /// `vm_config.environment_variables`, Istio `vmConfig.env`).
    Env {
        /// The variable's name.
        env: String,
    },
}

/// The plugin configuration exactly as users write it (JSON).
#[derive(Debug, Clone)]
pub struct ConfigSpec {
    /// Global mode, `enforce` (default) or `shadow`.
    pub mode: Mode,
    /// Hunt id source; default `{"path_prefix": "/hunts/"}`.
    pub hunt: HuntSourceSpec,
    /// Hunter id source; default `{"header": "x-veltrix-hunter"}`.
    pub hunter: HunterSourceSpec,
    /// Seconds of inactivity after which a session ends and its slot frees (default 300).
    pub session_ttl_s: u64,
    /// HMAC keys for admission tickets; the first signs, all verify (required).
    pub ticket_secrets: Vec<SecretSpec>,
    /// Default maximum concurrent hunters per hunt (default 2000).
    pub max_hunters: u32,
    /// Per-hunt overrides, keyed by hunt id.
    pub hunts: BTreeMap<String, HuntOverrideSpec>,
    /// Rejection reply.
    pub reject: RejectSpec,
    /// How many distinct hunts one Envoy process tracks (default 1024).
    pub max_tracked_hunts: u32,
    /// Behaviour for new hunts once `max_tracked_hunts` is reached (default `reject`).
    pub untracked_hunts: UntrackedPolicy,
    /// Behaviour for hunts not listed in `hunts` (default `admit`).
    pub unlisted_hunts: UnlistedPolicy,
    /// How many hunts get per-hunt active/limit gauges (default 100).
    pub max_hunt_metrics: u32,
    /// Which decisions are written into `x-huntgate-decision` on the upstream request
    /// (default: all but `session`, the hot path's, which costs a header write per request).
    pub mark_decisions: Vec<Decision>,
    /// The governor feed; without it the ratio is 1.0.
    pub governor: Option<GovernorSpec>,
    /// `true`: run without a governor on purpose (a configuration without a
    /// `governor` block is refused unless it says so).
    pub standalone: bool,
    /// How the upstream and the client end a session before its TTL.
    pub session_end: SessionEndSpec,
    /// The default waiting room of every hunt (off unless `enabled`).
    pub waiting_room: WaitingRoomSpec,
}

impl ConfigSpec {
    /// Every field at its documented default, `ticket_secrets` empty (it is required).
    #[inline(never)]
    pub fn defaults() -> Self {
        Self {
            mode: Mode::default(),
            hunt: default_hunt_source(),
            hunter: default_hunter_source(),
            session_ttl_s: default_session_ttl_s(),
            ticket_secrets: Vec::new(),
            max_hunters: default_max_hunters(),
            hunts: BTreeMap::new(),
            reject: RejectSpec::default(),
            max_tracked_hunts: default_max_tracked_hunts(),
            untracked_hunts: UntrackedPolicy::default(),
            unlisted_hunts: UnlistedPolicy::default(),
            max_hunt_metrics: default_max_hunt_metrics(),
            mark_decisions: default_mark_decisions(),
            governor: None,
            standalone: false,
            session_end: SessionEndSpec::default(),
            waiting_room: WaitingRoomSpec::default(),
        }
    }
}

fn default_hunt_source() -> HuntSourceSpec {
    HuntSourceSpec::PathPrefix("/hunts/".to_string())
}
fn default_hunter_source() -> HunterSourceSpec {
    HunterSourceSpec::Header("x-veltrix-hunter".to_string())
}
fn default_session_ttl_s() -> u64 {
    300
}
fn default_max_hunters() -> u32 {
    2000
}
fn default_reject_status() -> u32 {
    429
}
fn default_retry_after_s() -> u32 {
    30
}
fn default_max_tracked_hunts() -> u32 {
    1024
}
fn default_max_hunt_metrics() -> u32 {
    100
}

/// Compiled hunt source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HuntSource {
    /// Path segments of the prefix, lowercased (`["hunts"]` for `/hunts/`).
    PathPrefix(Vec<String>),
    /// Lowercased header name.
    Header(String),
}

/// Compiled hunter source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HunterSource {
    /// Lowercased header name.
    Header(String),
    /// Session ids minted by the filter.
    Anonymous,
}

/// Compiled per-hunt settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HuntSettings {
    /// Maximum concurrent hunters before the throttle ratio.
    pub max_hunters: u32,
    /// Effective mode.
    pub mode: Mode,
}

/// Largest accepted `waiting_room.max_queue`: bounds the bytes one queued
/// request copies (32 bytes per place).
pub const MAX_QUEUE_LIMIT: u32 = 10_000;
/// Largest accepted `waiting_room.queue_ttl_s` (one day).
pub const MAX_QUEUE_TTL_S: u32 = 86_400;
/// Largest accepted `waiting_room.retry_after_s`.
pub const MAX_QUEUE_RETRY_AFTER_S: u32 = 300;
/// Largest accepted `waiting_room.grace_s`.
pub const MAX_QUEUE_GRACE_S: u32 = 3_600;
/// Largest accepted `waiting_room.page`, in bytes.
pub const MAX_PAGE_BYTES: usize = 65_536;

/// A hunt's compiled waiting room (present only when enabled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingRoom {
    /// Most places in the queue (per Envoy process).
    pub max_queue: u32,
    /// Life of a place and its queue ticket, from the first queued reply (s).
    pub queue_ttl_s: u32,
    /// `Retry-After` of a queued reply (s).
    pub retry_after_s: u32,
    /// Extra seconds after `retry_after_s` before a silent hunter drops out.
    pub grace_s: u32,
    /// The waiting page template, if the built-in page is replaced.
    pub page: Option<String>,
}

impl WaitingRoom {
    /// Milliseconds after its last try at which a queued hunter drops out.
    pub fn abandon_after_ms(&self) -> u64 {
        (u64::from(self.retry_after_s) + u64::from(self.grace_s)) * 1000
    }

    /// Milliseconds a place lives after it was taken.
    pub fn ttl_ms(&self) -> u64 {
        u64::from(self.queue_ttl_s) * 1000
    }
}

/// The validated, immutable configuration the filter runs on.
#[derive(Debug, Clone)]
pub struct Config {
    /// Hunt id source.
    pub hunt_source: HuntSource,
    /// Hunter id source.
    pub hunter_source: HunterSource,
    /// Session lifetime without activity, in seconds.
    pub session_ttl_s: u32,
    /// Ticket signing and verification keys.
    pub ticket_keys: TicketKeys,
    /// Settings for hunts not listed (unless `unlisted` is `Reject`).
    pub default_hunt: HuntSettings,
    /// Listed hunts, by normalized id.
    pub hunts: HashMap<String, HuntSettings>,
    /// Rejection status.
    pub reject_status: u32,
    /// Rejection retry hint in seconds.
    pub retry_after_s: u32,
    /// Cap on tracked hunts per Envoy process.
    pub max_tracked_hunts: u32,
    /// Behaviour past the tracked-hunt cap.
    pub untracked: UntrackedPolicy,
    /// Behaviour for unlisted hunts.
    pub unlisted: UnlistedPolicy,
    /// Cap on hunts with per-hunt gauges.
    pub max_hunt_metrics: u32,
    /// Which decisions are marked upstream.
    pub marks: DecisionMarks,
    /// The governor feed, if configured.
    pub governor: Option<GovernorFeed>,
    /// Ending sessions (upstream header, leave request).
    pub session_end: SessionEnd,
    /// The waiting room of unlisted hunts (`None`: off).
    pub default_waiting_room: Option<WaitingRoom>,
    /// The waiting rooms of listed hunts, by normalized id (absent: off).
    pub waiting_rooms: HashMap<String, WaitingRoom>,
    /// Whether any hunt may have a waiting room (the adapter then decodes the
    /// queue ticket header and `accept`).
    pub waiting_room_any: bool,
}

impl Config {
    /// Parses, validates and compiles a JSON plugin configuration, reading
    /// `{"env": NAME}` secrets from the process environment.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        Self::from_json_with_env(bytes, &|name| std::env::var(name).ok())
    }

    /// [`Config::from_json`] with the environment given as a lookup function.
    pub fn from_json_with_env(
        bytes: &[u8],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let spec =
            crate::config_read::read_config(bytes).map_err(|e| field_error(e.path, e.problem))?;
        Self::compile(spec, env)
    }

    /// Validates and compiles an already-deserialized specification.
    #[inline(never)]
    pub fn compile(
        spec: ConfigSpec,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        match (&spec.governor, spec.standalone) {
            (None, false) => return Err(field_error(
                "governor",
                "missing: huntgate takes its limits from the governor; add a `governor` block, \
                     or set `\"standalone\": true` to run on this configuration's limits alone",
            )),
            (Some(_), true) => {
                return Err(field_error(
                    "standalone",
                    "must not be true when a `governor` block is given",
                ))
            }
            _ => {}
        }
        let hunt_source = match spec.hunt {
            HuntSourceSpec::PathPrefix(prefix) => HuntSource::PathPrefix(compile_prefix(&prefix)?),
            HuntSourceSpec::Header(name) => {
                HuntSource::Header(compile_header_name("hunt.header", &name)?)
            }
        };
        let hunter_source = match spec.hunter {
            HunterSourceSpec::Header(name) => {
                let name = compile_header_name("hunter.header", &name)?;
                if let HuntSource::Header(hunt_header) = &hunt_source {
                    if *hunt_header == name {
                        return Err(field_error("hunter.header", "must differ from hunt.header"));
                    }
                }
                HunterSource::Header(name)
            }
            HunterSourceSpec::Anonymous(true) => HunterSource::Anonymous,
            HunterSourceSpec::Anonymous(false) => {
                return Err(field_error(
                    "hunter.anonymous",
                    "must be true (use {\"header\": NAME} for identified hunters)",
                ))
            }
        };
        if spec.session_ttl_s < 1 || spec.session_ttl_s > MAX_SESSION_TTL_S {
            return Err(field_error(
                "session_ttl_s",
                format!("must be between 1 and {MAX_SESSION_TTL_S} seconds"),
            ));
        }
        let session_ttl_s = u32::try_from(spec.session_ttl_s)
            .map_err(|_| field_error("session_ttl_s", "out of range"))?;
        if spec.ticket_secrets.is_empty() {
            return Err(field_error(
                "ticket_secrets",
                "must list at least one secret (the first signs, all verify)",
            ));
        }
        let mut secrets = Vec::with_capacity(spec.ticket_secrets.len());
        for (i, secret) in spec.ticket_secrets.iter().enumerate() {
            let (secret, field) = match secret {
                SecretSpec::Inline(secret) => (secret.clone(), format!("ticket_secrets[{i}]")),
                SecretSpec::Env { env: name } => {
                    let field = format!("ticket_secrets[{i}].env");
                    let value = env(name).ok_or_else(|| {
                        field_error(
                            &field,
                            format!(
                                "environment variable `{}` is not set in the Wasm VM \
                                 (vm_config.environment_variables / Istio vmConfig.env)",
                                crate::json::truncated(name)
                            ),
                        )
                    })?;
                    (value, field)
                }
            };
            if secret.len() < MIN_SECRET_BYTES {
                return Err(field_error(
                    field,
                    format!("must be at least {MIN_SECRET_BYTES} bytes"),
                ));
            }
            secrets.push(secret);
        }
        let ticket_keys =
            TicketKeys::new(&secrets).map_err(|problem| field_error("ticket_secrets", problem))?;
        check_max_hunters("max_hunters", spec.max_hunters)?;
        let default_hunt = HuntSettings {
            max_hunters: spec.max_hunters,
            mode: spec.mode,
        };
        let default_waiting_room = compile_waiting_room(
            "waiting_room",
            &spec.waiting_room,
            &WaitingRoomSpec::default(),
        )?;
        let mut waiting_rooms = HashMap::new();
        let mut hunts = HashMap::with_capacity(spec.hunts.len());
        for (raw_id, over) in &spec.hunts {
            let id = normalize_hunt_id(raw_id).map_err(|e| {
                let problem = match e {
                    HuntIdError::Invalid => "hunt id must be 1-64 characters of [A-Za-z0-9._-]",
                };
                field_error(format!("hunts.{raw_id}"), problem)
            })?;
            let max_hunters = over.max_hunters.unwrap_or(spec.max_hunters);
            check_max_hunters(&format!("hunts.{raw_id}.max_hunters"), max_hunters)?;
            let settings = HuntSettings {
                max_hunters,
                mode: over.mode.unwrap_or(spec.mode),
            };
            let room = match &over.waiting_room {
                Some(room) => compile_waiting_room(
                    &format!("hunts.{raw_id}.waiting_room"),
                    room,
                    &spec.waiting_room,
                )?,
                None => default_waiting_room.clone(),
            };
            if let Some(room) = room {
                waiting_rooms.insert(id.clone(), room);
            }
            if hunts.insert(id, settings).is_some() {
                return Err(field_error(
                    format!("hunts.{raw_id}"),
                    "listed twice (hunt ids are case-insensitive)",
                ));
            }
        }
        if !(200..=599).contains(&spec.reject.status) {
            return Err(field_error(
                "reject.status",
                "must be an HTTP status between 200 and 599",
            ));
        }
        if spec.max_tracked_hunts < 1 || spec.max_tracked_hunts > MAX_TRACKED_HUNTS_LIMIT {
            return Err(field_error(
                "max_tracked_hunts",
                format!("must be between 1 and {MAX_TRACKED_HUNTS_LIMIT}"),
            ));
        }
        if hunts.len() > spec.max_tracked_hunts as usize {
            return Err(field_error(
                "hunts",
                format!(
                    "lists {} hunts but max_tracked_hunts is {}",
                    hunts.len(),
                    spec.max_tracked_hunts
                ),
            ));
        }
        let session_end = compile_session_end(&spec.session_end, &hunt_source, &hunter_source)?;
        let waiting_room_any = default_waiting_room.is_some() || !waiting_rooms.is_empty();
        Ok(Self {
            session_end,
            default_waiting_room,
            waiting_rooms,
            waiting_room_any,
            hunt_source,
            hunter_source,
            session_ttl_s,
            ticket_keys,
            default_hunt,
            hunts,
            reject_status: spec.reject.status,
            retry_after_s: spec.reject.retry_after_s,
            max_tracked_hunts: spec.max_tracked_hunts,
            untracked: spec.untracked_hunts,
            unlisted: spec.unlisted_hunts,
            max_hunt_metrics: spec.max_hunt_metrics,
            marks: DecisionMarks::new(&spec.mark_decisions),
            governor: spec.governor.map(compile_governor).transpose()?,
        })
    }

    /// Settings for a (normalized) hunt id, or `None` when unlisted hunts are rejected.
    pub fn hunt_settings(&self, hunt: &str) -> Option<HuntSettings> {
        match self.hunts.get(hunt) {
            Some(settings) => Some(*settings),
            None if self.unlisted == UnlistedPolicy::Admit => Some(self.default_hunt),
            None => None,
        }
    }

    /// The waiting room of a (normalized) hunt id, if it has one.
    pub fn waiting_room(&self, hunt: &str) -> Option<&WaitingRoom> {
        if !self.waiting_room_any {
            return None;
        }
        if self.hunts.contains_key(hunt) {
            return self.waiting_rooms.get(hunt);
        }
        self.default_waiting_room.as_ref()
    }
}

/// Compiles a waiting room at `field`, each field left out taken from `inherit`
/// (then from the documented default). `None` when it is not enabled.
#[inline(never)]
fn compile_waiting_room(
    field: &str,
    spec: &WaitingRoomSpec,
    inherit: &WaitingRoomSpec,
) -> Result<Option<WaitingRoom>, ConfigError> {
    let enabled = spec.enabled.or(inherit.enabled).unwrap_or(false);
    let pick =
        |own: Option<u32>, parent: Option<u32>, default: u32| own.or(parent).unwrap_or(default);
    let max_queue = pick(spec.max_queue, inherit.max_queue, 1000);
    let queue_ttl_s = pick(spec.queue_ttl_s, inherit.queue_ttl_s, 1800);
    let retry_after_s = pick(spec.retry_after_s, inherit.retry_after_s, 5);
    let grace_s = pick(spec.grace_s, inherit.grace_s, 10);
    let page = spec.page.clone().or_else(|| inherit.page.clone());
    let check = |name: &str, value: u32, low: u32, high: u32| {
        if (low..=high).contains(&value) {
            Ok(())
        } else {
            Err(field_error(
                format!("{field}.{name}"),
                format!("must be between {low} and {high}"),
            ))
        }
    };
    check("max_queue", max_queue, 1, MAX_QUEUE_LIMIT)?;
    check("queue_ttl_s", queue_ttl_s, 1, MAX_QUEUE_TTL_S)?;
    check("retry_after_s", retry_after_s, 1, MAX_QUEUE_RETRY_AFTER_S)?;
    check("grace_s", grace_s, 0, MAX_QUEUE_GRACE_S)?;
    if let Some(page) = &page {
        if page.len() > MAX_PAGE_BYTES || page.is_empty() {
            return Err(field_error(
                format!("{field}.page"),
                format!("must be 1-{MAX_PAGE_BYTES} bytes of HTML"),
            ));
        }
    }
    Ok(enabled.then_some(WaitingRoom {
        max_queue,
        queue_ttl_s,
        retry_after_s,
        grace_s,
        page,
    }))
}

#[inline(never)]
fn compile_governor(spec: GovernorSpec) -> Result<GovernorFeed, ConfigError> {
    if spec.cluster.is_empty() {
        return Err(field_error(
            "governor.cluster",
            "must name an Envoy cluster",
        ));
    }
    if !spec.path.starts_with('/') || spec.path.contains(['?', '#', ' ']) {
        return Err(field_error(
            "governor.path",
            "must start with `/` and have no query, fragment or spaces",
        ));
    }
    if !(100..=60_000).contains(&spec.poll_interval_ms) {
        return Err(field_error(
            "governor.poll_interval_ms",
            "must be between 100 and 60000",
        ));
    }
    if spec.long_poll_s > 60 {
        return Err(field_error(
            "governor.long_poll_s",
            "must be between 0 and 60",
        ));
    }
    if !(100..=60_000).contains(&spec.timeout_ms) {
        return Err(field_error(
            "governor.timeout_ms",
            "must be between 100 and 60000",
        ));
    }
    if spec.max_stale_s < 1 {
        return Err(field_error("governor.max_stale_s", "must be at least 1"));
    }
    let on_stale = match spec.on_stale {
        OnStaleSpec::FailOpen => StalePolicy::FailOpen,
        OnStaleSpec::FailClosed => StalePolicy::FailClosed,
        OnStaleSpec::Ratio(r) if r.is_finite() && (0.0..=1.0).contains(&r) => StalePolicy::Ratio(r),
        OnStaleSpec::Ratio(_) => {
            return Err(field_error(
                "governor.on_stale.ratio",
                "must be within [0, 1]",
            ))
        }
    };
    if let Some(id) = &spec.proxy_id {
        let valid = !id.is_empty()
            && id.len() <= MAX_PROXY_ID_LEN
            && id.bytes().all(|b| b.is_ascii_graphic());
        if !valid {
            return Err(field_error(
                "governor.proxy_id",
                format!("must be 1-{MAX_PROXY_ID_LEN} visible ASCII characters"),
            ));
        }
    }
    if !spec.leases_path.starts_with('/') || spec.leases_path.contains(['?', '#', ' ']) {
        return Err(field_error(
            "governor.leases_path",
            "must start with `/` and have no query, fragment or spaces",
        ));
    }
    check_max_hunters("governor.safe_share", spec.safe_share)?;
    let leases = spec.leases.then(|| LeaseSettings {
        path: spec.leases_path.clone(),
        proxy_id: spec.proxy_id.clone(),
        safe_share: spec.safe_share,
    });
    Ok(GovernorFeed {
        leases,
        authority: spec.authority.unwrap_or_else(|| spec.cluster.clone()),
        cluster: spec.cluster,
        path: spec.path,
        poll_interval_ms: spec.poll_interval_ms,
        long_poll_s: spec.long_poll_s,
        timeout_ms: spec.timeout_ms,
        staleness: Staleness {
            max_stale_ms: u64::from(spec.max_stale_s) * 1000,
            on_stale,
        },
    })
}

#[inline(never)]
fn compile_session_end(
    spec: &SessionEndSpec,
    hunt: &HuntSource,
    hunter: &HunterSource,
) -> Result<SessionEnd, ConfigError> {
    const HEADER: &str = "session_end.header";
    let header = match &spec.header {
        None => None,
        Some(name) => {
            let header = compile_header_name(HEADER, name)?;
            let taken = match (hunt, hunter) {
                (HuntSource::Header(h), _) if *h == header => Some("hunt.header"),
                (_, HunterSource::Header(h)) if *h == header => Some("hunter.header"),
                _ => None,
            };
            if let Some(other) = taken {
                return Err(field_error(HEADER, format!("must differ from {other}")));
            }
            Some(header)
        }
    };
    let leave = match &spec.leave_path {
        None => None,
        Some(segment) => {
            let valid = !segment.is_empty()
                && segment.len() <= MAX_LEAVE_PATH_LEN
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
            if !valid {
                return Err(field_error(
                    "session_end.leave_path",
                    format!(
                        "must be one path segment of 1-{MAX_LEAVE_PATH_LEN} characters of \
                         [A-Za-z0-9-._~] (not `.` or `..`), or null"
                    ),
                ));
            }
            let segment = segment.to_ascii_lowercase();
            Some(match hunt {
                HuntSource::PathPrefix(prefix) => LeavePath {
                    before: format!("/{}/", prefix.join("/")),
                    after: format!("/{segment}"),
                    names_hunt: true,
                },
                HuntSource::Header(_) => LeavePath {
                    before: format!("/{segment}"),
                    after: String::new(),
                    names_hunt: false,
                },
            })
        }
    };
    Ok(SessionEnd { header, leave })
}

fn check_max_hunters(field: &str, value: u32) -> Result<(), ConfigError> {
    if value > MAX_HUNTERS_LIMIT {
        return Err(field_error(
            field,
            format!("must be at most {MAX_HUNTERS_LIMIT}"),
        ));
    }
    Ok(())
}

#[inline(never)]
fn compile_prefix(prefix: &str) -> Result<Vec<String>, ConfigError> {
    const FIELD: &str = "hunt.path_prefix";
    if !prefix.starts_with('/') {
        return Err(field_error(FIELD, "must start with `/`"));
    }
    let mut segments = Vec::new();
    for segment in prefix.split('/').filter(|s| !s.is_empty()) {
        if segment == "." || segment == ".." {
            return Err(field_error(FIELD, "must not contain `.` or `..` segments"));
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        {
            return Err(field_error(
                FIELD,
                "segments may only use [A-Za-z0-9-._~] (no percent-encoding)",
            ));
        }
        segments.push(segment.to_ascii_lowercase());
    }
    if segments.is_empty() {
        return Err(field_error(
            FIELD,
            "must have at least one segment, e.g. `/hunts/`",
        ));
    }
    Ok(segments)
}

/// Headers the filter itself reads or writes, which cannot carry a hunt or hunter id
/// or end a session.
const RESERVED_HEADERS: [&str; 5] = [
    crate::request::TICKET_HEADER,
    crate::request::QUEUE_HEADER,
    crate::request::DECISION_HEADER,
    "cookie",
    "set-cookie",
];

fn compile_header_name(field: &str, name: &str) -> Result<String, ConfigError> {
    let valid = !name.is_empty()
        && !name.starts_with(':')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !valid {
        return Err(field_error(
            field,
            "must be a non-empty header name of [A-Za-z0-9-_.]",
        ));
    }
    let name = name.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&name.as_str()) {
        return Err(field_error(
            field,
            format!("`{name}` is a header the filter itself uses"),
        ));
    }
    Ok(name)
}
