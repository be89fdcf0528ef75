//! The lease exchange as served at `POST /v1/leases` (pure: request + state +
//! document + now → answer), its `/metrics` lines and the `GET /v1/fleet` view.
//!
//! The request is the filter's report (`core/src/lease.rs`):
//! `{"proxy": ID, "hunts": {HUNT: {"active": N, "rejected": N, "share": N}}}`.
//! The answer is the throttle document plus `"leases": {"lease_ms": N,
//! "hunts": {HUNT: {"share": N}}}` with a share for every hunt the document
//! governs (a hunt the proxy did not report is granted as if it reported no
//! session and no demand: headroom only, so its first joins need no round trip).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use huntgate_core::lease::{key_hex, parse_key_hex};

use super::{AllocatorConfig, Fleet, HuntView, Report};
use crate::clock::Millis;
use crate::document::ThrottleDocument;

/// Longest accepted proxy id.
pub const MAX_PROXY_ID_LEN: usize = 128;
/// Most hunts one report may carry.
pub const MAX_REPORTED_HUNTS: usize = 65_536;
/// Proxies listed per hunt in `/metrics` (the rest are summed only): bounds cardinality.
pub const MAX_PROXY_SERIES: usize = 50;

/// A proxy's report, as posted.
///
/// Besides the hunts, a report carries the sessions the proxy ended since its last
/// acknowledged report (`ends`) and the cursor of the fleet ends it has recorded
/// (`ends_after`); the answer's `ends` carries the others' ends after that cursor
/// ([`super::ends`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// The proxy's identity (one per Envoy process).
    pub proxy: String,
    /// The proxy's session TTL in seconds (1–604800; the filter's `session_ttl_s`):
    /// a proxy that stops reporting keeps its seats this long after its last report.
    /// Without it, its seats return when its lease ends.
    #[serde(default)]
    pub session_ttl_s: Option<u32>,
    /// The reporting process's own id (random per Envoy process, 1–128 visible ASCII):
    /// a restarted Envoy under the same `proxy` does not erase its predecessor's seats.
    #[serde(default)]
    pub incarnation: Option<String>,
    /// Per hunt id.
    #[serde(default)]
    pub hunts: BTreeMap<String, Report>,
    /// Sessions the proxy ended: `[hunter key as 16 hex digits, ended at ms]`, at most
    /// [`super::ends::MAX_ENDS_PER_REPORT`].
    #[serde(default)]
    pub ends: Vec<(String, u64)>,
    /// The cursor of the last fleet ends the proxy recorded (absent: from the oldest held).
    #[serde(default)]
    pub ends_after: Option<String>,
}

/// One hunt's share in the answer.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ShareAnswer {
    /// The share to enforce.
    pub share: u32,
}

/// The `leases` member of the answer.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseAnswer {
    /// How long the shares hold, from when the proxy sent its report.
    pub lease_ms: Millis,
    /// Per hunt.
    pub hunts: BTreeMap<String, ShareAnswer>,
}

/// The `ends` member of the answer: the other proxies' ends after the report's cursor.
#[derive(Debug, Clone, Serialize)]
pub struct EndsAnswer {
    /// The next report's `ends_after`.
    pub cursor: String,
    /// `[hunter key as 16 hex digits, ended at ms]`, oldest first.
    pub sessions: Vec<(String, u64)>,
}

impl EndsAnswer {
    /// The wire form of `since`.
    pub fn new(since: super::ends::EndsSince) -> Self {
        Self {
            cursor: since.cursor,
            sessions: since
                .sessions
                .into_iter()
                .map(|(key, at)| (key_hex(key), at))
                .collect(),
        }
    }
}

/// The whole answer: the throttle document with this proxy's leases.
#[derive(Debug, Clone, Serialize)]
pub struct ExchangeAnswer<'a> {
    /// The document in force.
    #[serde(flatten)]
    pub document: &'a ThrottleDocument,
    /// This proxy's shares.
    pub leases: LeaseAnswer,
    /// The fleet's ends for this proxy; absent when they could not be read (the proxy
    /// then reports its own again and keeps its cursor).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ends: Option<EndsAnswer>,
}

/// A report that passed validation: the proxy id and its hunts by canonical id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidReport {
    /// The proxy's identity.
    pub proxy: String,
    /// Per canonical hunt id.
    pub hunts: BTreeMap<String, Report>,
    /// The proxy's session TTL (ms; 0: not reported).
    pub session_ttl_ms: Millis,
    /// A hash of its incarnation (0: not reported).
    pub incarnation: u64,
    /// The sessions it ended (hunter key, ended at ms).
    pub ends: Vec<(u64, u64)>,
    /// Its fleet-ends cursor.
    pub ends_after: Option<String>,
}

impl ValidReport {
    /// The reporting process, as the ends log tells proxies apart.
    pub fn origin(&self) -> u64 {
        super::ends::origin_of(&self.proxy, self.incarnation)
    }
}

/// FNV-1a of an incarnation id, never 0 (0 means "not reported").
fn incarnation_hash(id: &str) -> u64 {
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    hash.max(1)
}

/// Longest session TTL a report may claim (the filter's own bound).
pub const MAX_SESSION_TTL_S: u32 = 604_800;

/// Checks the proxy id and the hunt ids (normalized); the error names the field.
pub fn validate(request: LeaseRequest) -> Result<ValidReport, String> {
    let proxy = request.proxy;
    let is_id = |id: &str| {
        !id.is_empty() && id.len() <= MAX_PROXY_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
    };
    if !is_id(&proxy) {
        return Err(format!(
            "proxy: must be 1-{MAX_PROXY_ID_LEN} visible ASCII characters"
        ));
    }
    let incarnation = match request.incarnation.as_deref() {
        None => 0,
        Some(id) if is_id(id) => incarnation_hash(id),
        Some(_) => {
            return Err(format!(
                "incarnation: must be 1-{MAX_PROXY_ID_LEN} visible ASCII characters"
            ))
        }
    };
    if request.hunts.len() > MAX_REPORTED_HUNTS {
        return Err(format!("hunts: at most {MAX_REPORTED_HUNTS} per report"));
    }
    let session_ttl_ms = match request.session_ttl_s {
        None => 0,
        Some(ttl) if (1..=MAX_SESSION_TTL_S).contains(&ttl) => crate::clock::secs(u64::from(ttl)),
        Some(_) => {
            return Err(format!(
                "session_ttl_s: must be between 1 and {MAX_SESSION_TTL_S}"
            ))
        }
    };
    let max_ends = super::ends::MAX_ENDS_PER_REPORT;
    if request.ends.len() > max_ends {
        return Err(format!("ends: at most {max_ends} per report"));
    }
    let mut ends = Vec::with_capacity(request.ends.len());
    for (i, (key, at)) in request.ends.iter().enumerate() {
        let key = parse_key_hex(key)
            .ok_or_else(|| format!("ends[{i}]: the hunter key must be 16 hex digits"))?;
        if *at >= 1 << 63 {
            return Err(format!("ends[{i}]: the end time is not a time in ms"));
        }
        ends.push((key, *at));
    }
    let ends_after = match request.ends_after {
        Some(cursor) if !is_id(&cursor) => {
            return Err(format!(
                "ends_after: must be 1-{MAX_PROXY_ID_LEN} visible ASCII characters"
            ))
        }
        cursor => cursor,
    };
    let mut hunts: BTreeMap<String, Report> = BTreeMap::new();
    for (raw, report) in request.hunts {
        let hunt = huntgate_core::hunt_id::normalize_hunt_id(&raw)
            .map_err(|_| format!("hunts.{}: not a valid hunt id", crate::text::echo(&raw)))?;
        hunts.insert(hunt, report);
    }
    Ok(ValidReport {
        proxy,
        hunts,
        session_ttl_ms,
        incarnation,
        ends,
        ends_after,
    })
}

/// Grants `report.proxy` a share of every `(hunt, fleet limit)` in `limits` (a hunt it did
/// not report counts as no session, no demand), after dropping expired leases.
pub fn grant_all<'h>(
    fleet: &mut Fleet,
    report: &ValidReport,
    limits: impl IntoIterator<Item = (&'h str, u32)>,
    now_ms: Millis,
    config: &AllocatorConfig,
) -> LeaseAnswer {
    fleet.expire(now_ms, config);
    let mut hunts = BTreeMap::new();
    for (hunt, limit) in limits {
        let reported = Report {
            session_ttl_ms: report.session_ttl_ms,
            incarnation: report.incarnation,
            ..report.hunts.get(hunt).copied().unwrap_or_default()
        };
        let grant = fleet.report(hunt, &report.proxy, reported, limit, now_ms, config);
        hunts.insert(hunt.to_owned(), ShareAnswer { share: grant.share });
    }
    LeaseAnswer {
        lease_ms: config.lease_ms,
        hunts,
    }
}

/// Every hunt `document` governs with its fleet limit: what an exchange grants shares of.
pub fn limits(document: &ThrottleDocument) -> impl Iterator<Item = (&str, u32)> {
    document
        .hunts
        .iter()
        .map(|(hunt, entry)| (hunt.as_str(), entry.limit))
}

/// One per-hunt metric family: name, help, value.
type HuntFamily = (&'static str, &'static str, fn(&HuntView) -> u64);

/// Prometheus lines for the fleet: per hunt the fleet limit, Σ granted, Σ
/// committed, Σ active, proxies holding a share, learning; per proxy (the
/// first [`MAX_PROXY_SERIES`] per hunt, by id) share and active.
pub fn render_metrics(out: &mut String, views: &BTreeMap<String, HuntView>) {
    let families: [HuntFamily; 8] = [
        (
            "huntgate_fleet_limit",
            "Fleet-wide limit of the hunt.",
            |v| u64::from(v.limit),
        ),
        (
            "huntgate_fleet_granted",
            "Sum of the shares granted.",
            |v| v.granted,
        ),
        (
            "huntgate_fleet_committed",
            "Sum of what proxies may still be acting on (never above the limit).",
            |v| v.committed,
        ),
        (
            "huntgate_fleet_active",
            "Sum of the sessions proxies report.",
            |v| v.active,
        ),
        (
            "huntgate_fleet_held",
            "Sum of the seats proxies hold, silent ones' sessions included.",
            |v| v.held,
        ),
        (
            "huntgate_fleet_silent",
            "Proxies whose lease ended unrenewed, still counted for their sessions.",
            |v| v.silent as u64,
        ),
        (
            "huntgate_fleet_holders",
            "Proxies holding a non-zero share.",
            |v| v.holders as u64,
        ),
        (
            "huntgate_fleet_learning",
            "1 while the hunt is in the learning period after a governor start.",
            |v| u64::from(v.learning),
        ),
    ];
    for (name, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (hunt, view) in views {
            let _ = writeln!(out, "{name}{{hunt=\"{hunt}\"}} {}", value(view));
        }
    }
    for (name, help, pick) in [
        (
            "huntgate_fleet_proxy_share",
            "A proxy's share of the hunt (first 50 proxies per hunt).",
            (|p: &super::ProxyView| p.share) as fn(&super::ProxyView) -> u32,
        ),
        (
            "huntgate_fleet_proxy_active",
            "A proxy's reported sessions (first 50 proxies per hunt).",
            |p: &super::ProxyView| p.active,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (hunt, view) in views {
            for (proxy, p) in view.proxies.iter().take(MAX_PROXY_SERIES) {
                let proxy = proxy.replace(['\\', '"'], "_");
                let _ = writeln!(
                    out,
                    "{name}{{hunt=\"{hunt}\",proxy=\"{proxy}\"}} {}",
                    pick(p)
                );
            }
        }
    }
}
