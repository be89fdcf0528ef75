//! Request classification: path canonicalisation (`huntgate_core::path`), hunt
//! ids (`hunt_id`) and hunt/hunter/ticket extraction from headers (`request`).
//!
//! Checks, for an arbitrary `:path`, prefix and header list:
//! - nothing panics;
//! - a hunt id found is canonical: `normalize_hunt_id` is the identity on it;
//! - the canonical path of that hunt (`/<prefix>/<hunt>`) is a fixed point: it
//!   reads as exactly that hunt again;
//! - the verdict does not depend on ASCII case (prefix and ids ignore case,
//!   `%2f` = `%2F`), nor on a query or fragment appended to a path without one;
//! - `classify` agrees with `hunt_of_path` for path-sourced hunts, returns a
//!   hunter only if it is 1–256 visible ASCII bytes taken from the one hunter
//!   header, and at most `MAX_TICKETS` non-empty tickets, all from the ticket
//!   header or a `huntgate.<hunt>` cookie;
//! - with a header-sourced hunt, the hunt is the normalized value of the one hunt header.
#![no_main]

use std::sync::OnceLock;

use huntgate_core::config::Config;
use huntgate_core::hunt_id::normalize_hunt_id;
use huntgate_core::path::{hunt_of_path, PathHunt};
use huntgate_core::request::{
    classify, Classified, Hunter, Refusal, COOKIE_PREFIX, MAX_HUNTER_ID_LEN, MAX_TICKETS,
    TICKET_HEADER,
};
use libfuzzer_sys::fuzz_target;

/// Header names the configurations below read, and one they do not.
const NAMES: [&str; 7] = [
    ":path",
    "x-veltrix-hunter",
    TICKET_HEADER,
    "cookie",
    "x-hunt",
    "x-huntgate-decision",
    "x-other",
];

/// The input, one field a line (text, lossily decoded): the `:path`, the
/// prefix (`/`-separated segments; only `[a-z0-9-._~]` ones, no dot segments,
/// are kept, default `hunts`), a query/fragment suffix, then headers, one a
/// line, as a digit choosing the name from [`NAMES`] followed by the value.
struct Input {
    path: String,
    prefix: Vec<String>,
    query: String,
    headers: Vec<(usize, String)>,
}

impl Input {
    fn parse(data: &[u8]) -> Self {
        let text = String::from_utf8_lossy(data);
        let mut lines = text.split('\n');
        let path = lines.next().unwrap_or_default().to_string();
        let prefix = lines
            .next()
            .unwrap_or_default()
            .split('/')
            .map(str::to_string)
            .collect();
        let query = lines.next().unwrap_or_default().to_string();
        let headers = lines
            .map(|line| {
                let mut chars = line.chars();
                let name = chars.next().and_then(|c| c.to_digit(10)).unwrap_or(0);
                (name as usize, chars.as_str().to_string())
            })
            .collect();
        Self {
            path,
            prefix,
            query,
            headers,
        }
    }
}

/// The header-sourced configuration, compiled once.
static BY_HEADER: OnceLock<Option<Config>> = OnceLock::new();

fn config(hunt_source: &str) -> Option<Config> {
    let json = format!(
        r#"{{"standalone": true, "ticket_secrets": ["0123456789abcdef0123"], "hunt": {hunt_source},
            "hunts": {{"listed": {{"max_hunters": 3}}}}}}"#
    );
    Config::from_json_with_env(json.as_bytes(), &|_| None).ok()
}

fn canonical_prefix(raw: &[String]) -> Vec<String> {
    let mut prefix: Vec<String> = raw
        .iter()
        .filter(|s| {
            !s.is_empty()
                && *s != "."
                && *s != ".."
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        })
        .map(|s| s.to_ascii_lowercase())
        .take(4)
        .collect();
    if prefix.is_empty() {
        prefix.push("hunts".to_string());
    }
    prefix
}

fn check_path(path: &str, prefix: &[String], query: &str) {
    let verdict = hunt_of_path(path, prefix);
    if let PathHunt::Hunt(hunt) = &verdict {
        assert_eq!(normalize_hunt_id(hunt).as_ref(), Ok(hunt), "not canonical");
        let canonical = format!("/{}/{hunt}", prefix.join("/"));
        assert_eq!(
            hunt_of_path(&canonical, prefix),
            PathHunt::Hunt(hunt.clone()),
            "canonical path {canonical:?} of {path:?} is not a fixed point"
        );
        let under = format!("{canonical}/join");
        assert_eq!(hunt_of_path(&under, prefix), PathHunt::Hunt(hunt.clone()));
    }
    assert_eq!(
        hunt_of_path(&path.to_ascii_uppercase(), prefix),
        verdict,
        "upper case changed the verdict of {path:?}"
    );
    assert_eq!(
        hunt_of_path(&path.to_ascii_lowercase(), prefix),
        verdict,
        "lower case changed the verdict of {path:?}"
    );
    if !path.contains(['?', '#']) {
        let suffixed = format!("{path}?{query}");
        assert_eq!(
            hunt_of_path(&suffixed, prefix),
            verdict,
            "query changed {path:?}"
        );
        let fragment = format!("{path}#{query}");
        assert_eq!(
            hunt_of_path(&fragment, prefix),
            verdict,
            "fragment changed {path:?}"
        );
    }
}

/// Where the configuration takes the hunt id from.
enum Source<'a> {
    Path(&'a [String]),
    Header,
}

fn check_classified(config: &Config, headers: &[(&str, &str)], source: Source<'_>) {
    let classified = classify(config, headers);
    let values = |name: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .collect()
    };
    match source {
        Source::Path(prefix) => match values(":path").as_slice() {
            [path] => match (hunt_of_path(path, prefix), &classified) {
                (PathHunt::NotHunt, c) => assert_eq!(*c, Classified::NotHunt),
                (PathHunt::Invalid, c) => {
                    assert_eq!(*c, Classified::Refuse(Refusal::InvalidHuntId))
                }
                (PathHunt::Ambiguous, c) => {
                    assert_eq!(*c, Classified::Refuse(Refusal::AmbiguousHuntPath))
                }
                (PathHunt::Hunt(hunt), Classified::Hunt(request)) => {
                    assert_eq!(hunt, request.hunt)
                }
                (PathHunt::Hunt(hunt), Classified::Refuse(refusal)) => assert!(
                    matches!(
                        refusal,
                        Refusal::DuplicateHunterHeader | Refusal::InvalidHunterId
                    ) || *refusal == Refusal::HunterRequired { hunt },
                    "{refusal:?}"
                ),
                (PathHunt::Hunt(_), Classified::NotHunt) => panic!("hunt path not a hunt"),
            },
            _ => assert_eq!(classified, Classified::NotHunt, "no single :path"),
        },
        Source::Header => {
            let hunts = values("x-hunt");
            match (hunts.as_slice(), &classified) {
                ([], c) => assert_eq!(*c, Classified::NotHunt),
                ([raw], Classified::Hunt(request)) => {
                    assert_eq!(normalize_hunt_id(raw.trim()).as_ref(), Ok(&request.hunt))
                }
                ([raw], c) => {
                    if normalize_hunt_id(raw.trim()).is_err() {
                        assert_eq!(*c, Classified::Refuse(Refusal::InvalidHuntId));
                    }
                    assert_ne!(*c, Classified::NotHunt);
                }
                (_, c) => assert_eq!(*c, Classified::Refuse(Refusal::DuplicateHuntHeader)),
            }
        }
    }
    let Classified::Hunt(request) = classified else {
        return;
    };
    assert_eq!(normalize_hunt_id(&request.hunt).as_ref(), Ok(&request.hunt));
    let hunters = values("x-veltrix-hunter");
    match request.hunter {
        Hunter::Identified(id) => {
            assert_eq!(hunters.as_slice(), [id]);
            assert!(!id.is_empty() && id.len() <= MAX_HUNTER_ID_LEN);
            assert!(id.bytes().all(|b| b.is_ascii_graphic()));
        }
        Hunter::Anonymous => panic!("configured with a hunter header"),
    }
    let tickets: Vec<&str> = request.tickets.iter().collect();
    assert!(tickets.len() <= MAX_TICKETS);
    let cookie_name = format!("{COOKIE_PREFIX}{}", request.hunt);
    for ticket in tickets {
        assert!(!ticket.is_empty());
        let from_header = values(TICKET_HEADER).iter().any(|v| v.trim() == ticket);
        let from_cookie = values("cookie").iter().any(|v| {
            v.split(';').any(|pair| {
                pair.trim()
                    .split_once('=')
                    .is_some_and(|(n, t)| n.eq_ignore_ascii_case(&cookie_name) && t == ticket)
            })
        });
        assert!(from_header || from_cookie, "ticket {ticket:?} from nowhere");
    }
}

fuzz_target!(|data: &[u8]| {
    let input = Input::parse(data);
    let prefix = canonical_prefix(&input.prefix);
    check_path(&input.path, &prefix, &input.query);
    let _ = normalize_hunt_id(&input.path);

    let headers: Vec<(&str, &str)> = std::iter::once((":path", input.path.as_str()))
        .chain(input.headers.iter().map(|(name, value)| {
            let name = NAMES.get(*name % NAMES.len()).copied();
            (name.unwrap_or("x-other"), value.as_str())
        }))
        .collect();
    let prefix_json = format!("\"/{}/\"", prefix.join("/"));
    if let Some(by_path) = config(&format!("{{\"path_prefix\": {prefix_json}}}")) {
        check_classified(&by_path, &headers, Source::Path(&prefix));
    }
    let by_header = BY_HEADER.get_or_init(|| config(r#"{"header": "x-hunt"}"#));
    if let Some(by_header) = by_header {
        check_classified(by_header, &headers, Source::Header);
    }
});
