//! Request → (hunt, hunter, ticket): which hunt a request belongs to and who asks.
//!
//! Paths are read every way an upstream might read them ([`crate::path`]), so
//! that no spelling of a hunt path reaches the upstream without admission and
//! none is counted against another hunt than the one the upstream serves.

use crate::config::{Config, HuntSettings, HuntSource, HunterSource};
use crate::hunt_id::normalize_hunt_id;
use crate::path::{hunt_of_path, PathHunt};

/// Request header carrying an admission ticket, both ways.
pub const TICKET_HEADER: &str = "x-huntgate-ticket";
/// Request header the filter sets for the upstream on every hunt request.
pub const DECISION_HEADER: &str = "x-huntgate-decision";
/// Prefix of the per-hunt ticket cookie name (`huntgate.<hunt>`).
pub const COOKIE_PREFIX: &str = "huntgate.";
/// Header carrying a waiting room's queue ticket, both ways.
pub const QUEUE_HEADER: &str = "x-huntgate-queue";
/// Prefix of the per-hunt queue ticket cookie name (`huntgate-queue.<hunt>`).
pub const QUEUE_COOKIE_PREFIX: &str = "huntgate-queue.";
/// Longest accepted hunter id, in bytes.
pub const MAX_HUNTER_ID_LEN: usize = 256;
/// Tickets checked per request (ticket headers first, then the hunt's cookies).
pub const MAX_TICKETS: usize = 4;

/// Why a hunt request is refused before admission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 400: the hunt id is not 1–64 characters of `[A-Za-z0-9._-]`.
    InvalidHuntId,
    /// 400: readings of the path name different hunts (see [`crate::path`]).
    AmbiguousHuntPath,
    /// 400: more than one hunt header.
    DuplicateHuntHeader,
    /// 400: more than one hunter header.
    DuplicateHunterHeader,
    /// 400: the hunter id is empty, too long or not visible ASCII.
    InvalidHunterId,
    /// 401: a hunt request without hunter identity.
    HunterRequired {
        /// The hunt asked for.
        hunt: String,
    },
    /// 404: the hunt is not listed and `unlisted_hunts` is `reject`.
    UnknownHunt {
        /// The hunt asked for.
        hunt: String,
    },
}

/// Who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hunter<'a> {
    /// Identified by the configured header.
    Identified(&'a str),
    /// Anonymous mode: the identity is the session id inside a valid ticket.
    Anonymous,
}

/// A request that belongs to a hunt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HuntRequest<'a> {
    /// Canonical (lowercase) hunt id.
    pub hunt: String,
    /// The hunt's configured settings.
    pub settings: HuntSettings,
    /// The hunter.
    pub hunter: Hunter<'a>,
    /// The tickets presented (ticket headers first, then the hunt's cookies).
    pub tickets: Tickets<'a>,
    /// A leave request (`POST` on `session_end.leave_path`): the filter ends the
    /// presented ticket's session and answers it itself.
    pub leave: bool,
}

/// Up to [`MAX_TICKETS`] presented tickets, in the order they are checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tickets<'a>([Option<&'a str>; MAX_TICKETS]);

impl<'a> Tickets<'a> {
    /// Tickets from these values, the first [`MAX_TICKETS`] non-empty ones.
    pub fn from_values(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut tickets = Self::default();
        let mut slots = tickets.0.iter_mut();
        for value in values.into_iter().filter(|v| !v.is_empty()) {
            match slots.next() {
                Some(slot) => *slot = Some(value),
                None => break,
            }
        }
        tickets
    }

    /// The tickets, in order.
    pub fn iter(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.0.iter().flatten().copied()
    }

    /// Whether no ticket was presented.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }
}

/// The outcome of classifying a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classified<'a> {
    /// Not a hunt request: pass untouched.
    NotHunt,
    /// Refuse with an error reply.
    Refuse(Refusal),
    /// A hunt request, to be admitted or not.
    Hunt(HuntRequest<'a>),
}

/// One request header: `(name, value)` pairs of owned or borrowed strings.
pub trait HeaderPair {
    /// The lowercase name.
    fn name(&self) -> &str;
    /// The value.
    fn value(&self) -> &str;
}

impl<K: AsRef<str>, V: AsRef<str>> HeaderPair for (K, V) {
    fn name(&self) -> &str {
        self.0.as_ref()
    }

    fn value(&self) -> &str {
        self.1.as_ref()
    }
}

/// Whether [`classify`] reads header `name` under `config` (the adapter decodes
/// only these: the hunt and hunter headers or `:path`, the ticket header, cookies).
pub fn reads_header(config: &Config, name: &[u8]) -> bool {
    let hunt = match &config.hunt_source {
        HuntSource::PathPrefix(_) => name == b":path",
        HuntSource::Header(header) => name == header.as_bytes(),
    };
    let hunter = match &config.hunter_source {
        HunterSource::Header(header) => name == header.as_bytes(),
        HunterSource::Anonymous => false,
    };
    let leave = config.session_end.leave.is_some() && (name == b":method" || name == b":path");
    let queue = config.waiting_room_any && (name == QUEUE_HEADER.as_bytes() || name == b"accept");
    hunt || hunter
        || leave
        || queue
        || name == TICKET_HEADER.as_bytes()
        || name == b"cookie"
        || name == DECISION_HEADER.as_bytes()
}

/// Whether the client sent its own `x-huntgate-decision` (which must never reach the upstream).
pub fn sends_decision<H: HeaderPair>(headers: &[H]) -> bool {
    headers.iter().any(|h| h.name() == DECISION_HEADER)
}

/// Classifies a request from its headers (lowercase names, pseudo-headers included).
pub fn classify<'a, H: HeaderPair>(config: &Config, headers: &'a [H]) -> Classified<'a> {
    let hunt = match &config.hunt_source {
        HuntSource::PathPrefix(prefix) => {
            let Some(path) = single_header(headers, ":path").ok().flatten() else {
                return Classified::NotHunt;
            };
            match hunt_of_path(path, prefix) {
                PathHunt::Hunt(hunt) => hunt,
                PathHunt::NotHunt => return Classified::NotHunt,
                PathHunt::Invalid => return Classified::Refuse(Refusal::InvalidHuntId),
                PathHunt::Ambiguous => return Classified::Refuse(Refusal::AmbiguousHuntPath),
            }
        }
        HuntSource::Header(name) => match single_header(headers, name) {
            Ok(Some(value)) => match normalize_hunt_id(value.trim()) {
                Ok(hunt) => hunt,
                Err(_) => return Classified::Refuse(Refusal::InvalidHuntId),
            },
            Ok(None) => return Classified::NotHunt,
            Err(Duplicate) => return Classified::Refuse(Refusal::DuplicateHuntHeader),
        },
    };
    let Some(settings) = config.hunt_settings(&hunt) else {
        return Classified::Refuse(Refusal::UnknownHunt { hunt });
    };
    let hunter = match &config.hunter_source {
        HunterSource::Anonymous => Hunter::Anonymous,
        HunterSource::Header(name) => match single_header(headers, name) {
            Ok(Some(value)) if is_valid_hunter_id(value) => Hunter::Identified(value),
            Ok(Some(_)) => return Classified::Refuse(Refusal::InvalidHunterId),
            Ok(None) => return Classified::Refuse(Refusal::HunterRequired { hunt }),
            Err(Duplicate) => return Classified::Refuse(Refusal::DuplicateHunterHeader),
        },
    };
    let tickets = find_tickets(headers, &hunt);
    let leave = is_leave(config, headers, &hunt);
    Classified::Hunt(HuntRequest {
        hunt,
        settings,
        hunter,
        tickets,
        leave,
    })
}

/// Whether a request of `hunt` is its leave request: `POST` on exactly the
/// configured path (query ignored, ASCII case ignored).
fn is_leave<H: HeaderPair>(config: &Config, headers: &[H], hunt: &str) -> bool {
    let Some(leave) = &config.session_end.leave else {
        return false;
    };
    if single_header(headers, ":method").ok().flatten() != Some("POST") {
        return false;
    }
    let Some(path) = single_header(headers, ":path").ok().flatten() else {
        return false;
    };
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let Some(rest) = strip_prefix_ignore_case(path, &leave.before) else {
        return false;
    };
    if !leave.names_hunt {
        return rest.is_empty();
    }
    let Some(segment) = rest.len().checked_sub(leave.after.len()).and_then(|cut| {
        let tail = rest.get(cut..)?;
        tail.eq_ignore_ascii_case(&leave.after)
            .then(|| rest.get(..cut))
            .flatten()
    }) else {
        return false;
    };
    segment.eq_ignore_ascii_case(hunt)
}

fn strip_prefix_ignore_case<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| value.get(prefix.len()..))
        .flatten()
}

/// A header that appears more than once.
#[derive(Debug)]
struct Duplicate;

fn single_header<'a, H: HeaderPair>(
    headers: &'a [H],
    name: &str,
) -> Result<Option<&'a str>, Duplicate> {
    let mut found = None;
    for header in headers {
        if header.name() == name {
            if found.is_some() {
                return Err(Duplicate);
            }
            found = Some(header.value());
        }
    }
    Ok(found)
}

fn is_valid_hunter_id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_HUNTER_ID_LEN
        && value.bytes().all(|b| b.is_ascii_graphic())
}

/// The presented queue tickets: every `x-huntgate-queue` header, then every
/// `huntgate-queue.<hunt>` cookie, at most [`MAX_TICKETS`] in all (read on
/// the join path only).
pub fn find_queue_tickets<'a, H: HeaderPair>(headers: &'a [H], hunt: &str) -> Tickets<'a> {
    presented(headers, hunt, QUEUE_HEADER, QUEUE_COOKIE_PREFIX)
}

/// Whether the request's `accept` lists `text/html` (a browser navigating):
/// such a join gets the waiting page instead of the JSON.
pub fn accepts_html<H: HeaderPair>(headers: &[H]) -> bool {
    headers
        .iter()
        .filter(|header| header.name() == "accept")
        .flat_map(|header| header.value().split(','))
        .any(|item| {
            let media = item.split(';').next().unwrap_or_default().trim();
            media.eq_ignore_ascii_case("text/html")
        })
}

/// The presented tickets: every `x-huntgate-ticket` header, then every
/// `huntgate.<hunt>` cookie, at most [`MAX_TICKETS`] in all.
fn find_tickets<'a, H: HeaderPair>(headers: &'a [H], hunt: &str) -> Tickets<'a> {
    presented(headers, hunt, TICKET_HEADER, COOKIE_PREFIX)
}

/// Every `header` value, then every value of a `<cookie_prefix><hunt>` cookie
/// (the hunt compared without ASCII case), at most [`MAX_TICKETS`] in all.
fn presented<'a, H: HeaderPair>(
    headers: &'a [H],
    hunt: &str,
    header: &str,
    cookie_prefix: &str,
) -> Tickets<'a> {
    let from_headers = headers
        .iter()
        .filter(move |h| h.name() == header)
        .map(|h| h.value().trim());
    let from_cookies = headers
        .iter()
        .filter(|h| h.name() == "cookie")
        .flat_map(|h| h.value().split(';'))
        .filter_map(move |pair| {
            let (name, value) = pair.trim().split_once('=')?;
            let name_hunt = name.strip_prefix(cookie_prefix)?;
            name_hunt.eq_ignore_ascii_case(hunt).then_some(value)
        });
    Tickets::from_values(from_headers.chain(from_cookies))
}
