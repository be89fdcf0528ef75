//! Request → (hunt, hunter, ticket): which hunt a request belongs to and who asks.
//!
//! Paths are canonicalized before matching (percent-decoding, `\` as `/`,
//! empty, `.` and `..` segments, `;params`, ASCII case of the prefix) so that
//! no spelling of a hunt path reaches the upstream without admission.

use crate::config::{Config, HuntSettings, HuntSource, HunterSource};
use crate::hunt_id::normalize_hunt_id;

/// Request header carrying an admission ticket, both ways.
pub const TICKET_HEADER: &str = "x-huntgate-ticket";
/// Request header the filter sets for the upstream on every hunt request.
pub const DECISION_HEADER: &str = "x-huntgate-decision";
/// Prefix of the per-hunt ticket cookie name (`huntgate.<hunt>`).
pub const COOKIE_PREFIX: &str = "huntgate.";
/// Longest accepted hunter id, in bytes.
pub const MAX_HUNTER_ID_LEN: usize = 256;

/// Why a hunt request is refused before admission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 400: the hunt id is not 1–64 characters of `[A-Za-z0-9._-]`.
    InvalidHuntId,
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
    /// The ticket presented (header first, then cookie), if any.
    pub ticket: Option<&'a str>,
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
    hunt || hunter || name == TICKET_HEADER.as_bytes() || name == b"cookie"
}

/// Classifies a request from its headers (lowercase names, pseudo-headers included).
pub fn classify<'a, H: HeaderPair>(config: &Config, headers: &'a [H]) -> Classified<'a> {
    let raw_hunt = match &config.hunt_source {
        HuntSource::PathPrefix(prefix) => {
            let Some(path) = single_header(headers, ":path").ok().flatten() else {
                return Classified::NotHunt;
            };
            match hunt_segment_from_path(path, prefix) {
                Some(segment) => segment,
                None => return Classified::NotHunt,
            }
        }
        HuntSource::Header(name) => match single_header(headers, name) {
            Ok(Some(value)) => value.trim().to_string(),
            Ok(None) => return Classified::NotHunt,
            Err(Duplicate) => return Classified::Refuse(Refusal::DuplicateHuntHeader),
        },
    };
    let Ok(hunt) = normalize_hunt_id(&raw_hunt) else {
        return Classified::Refuse(Refusal::InvalidHuntId);
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
    let ticket = find_ticket(headers, &hunt);
    Classified::Hunt(HuntRequest {
        hunt,
        settings,
        hunter,
        ticket,
    })
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

fn find_ticket<'a, H: HeaderPair>(headers: &'a [H], hunt: &str) -> Option<&'a str> {
    let from_header = headers
        .iter()
        .find(|header| header.name() == TICKET_HEADER)
        .map(|header| header.value().trim());
    if let Some(ticket) = from_header.filter(|t| !t.is_empty()) {
        return Some(ticket);
    }
    headers
        .iter()
        .filter(|header| header.name() == "cookie")
        .flat_map(|header| header.value().split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            let name_hunt = name.strip_prefix(COOKIE_PREFIX)?;
            (name_hunt.eq_ignore_ascii_case(hunt) && !value.is_empty()).then_some(value)
        })
}

/// Returns the raw (decoded, not yet validated) hunt segment of a path under `prefix`,
/// or `None` when the canonical path is not below the prefix.
pub fn hunt_segment_from_path(path: &str, prefix: &[String]) -> Option<String> {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    let decoded = percent_decode(path.get(..end)?);
    let mut segments: Vec<&[u8]> = Vec::new();
    for raw in decoded.split(|b| *b == b'/' || *b == b'\\') {
        let segment = match raw.iter().position(|b| *b == b';') {
            Some(cut) => raw.get(..cut)?,
            None => raw,
        };
        match segment {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            _ => segments.push(segment),
        }
    }
    if segments.len() <= prefix.len() {
        return None;
    }
    let matches_prefix = prefix
        .iter()
        .zip(&segments)
        .all(|(want, got)| want.as_bytes().eq_ignore_ascii_case(got));
    if !matches_prefix {
        return None;
    }
    let segment = segments.get(prefix.len())?;
    Some(String::from_utf8_lossy(segment).into_owned())
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits stays literal.
fn percent_decode(input: &str) -> Vec<u8> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i + 1).and_then(|c| hex_value(*c));
            let lo = bytes.get(i + 2).and_then(|c| hex_value(*c));
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}
