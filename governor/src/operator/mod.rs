//! What operators and the hunt orchestrator set through the gRPC API: live per-hunt
//! overrides, hunts started before their players arrive, hunts ended, and the audit log of
//! every such change. Pure: [`apply`] validates one [`Mutation`] against the state and the
//! policy files and returns the next state; [`effective`] merges the state into the policy
//! the control law runs on. Where the state is kept is [`store`]'s business.
//!
//! Precedence, per hunt (documented in governor/README.md, "Live overrides"):
//! 1. an **override** (until cleared or until its `ttl_s` lapses) replaces the fields it
//!    sets: `max_hunters`, `min_hunters`, and the mode (pin, open, closed, governed);
//! 2. a **policy file** `policies/hunts/<hunt>.yaml` gives the rest; an edit of the file
//!    never discards an override (both are shown by `ListHunts`);
//! 3. a hunt **started** through the API without a policy file takes the default spec with
//!    the started `max_hunters` / `min_hunters`;
//! 4. an **ended** hunt is out of the document, even if its policy file is still there
//!    (until `StartHunt`, or until the file goes).

pub mod store;

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::clock::Millis;
use crate::law::HuntSpec;
use crate::policy::{Policy, MAX_HUNTS};

/// Format version of the stored state.
pub const FORMAT: u32 = 1;
/// Audit entries kept (the oldest go first).
pub const MAX_AUDIT: usize = 500;
/// Longest accepted reason, in bytes.
pub const MAX_REASON_BYTES: usize = 256;
/// Longest accepted override lifetime.
pub const MAX_TTL_S: u32 = 30 * 24 * 3600;
/// Most hunts the API may start or override beyond the policy files (bounds the state,
/// the document and the `hunt` label).
pub const MAX_API_HUNTS: usize = MAX_HUNTS;

/// How an override drives the ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Keep the policy's mode; a `pin_ratio` of the override pins.
    #[default]
    Keep,
    /// The control law runs (a policy file's pin is set aside).
    Governed,
    /// The ratio is the override's `pin_ratio`.
    Pinned,
    /// The ratio is 1.0.
    Open,
    /// The ratio is 0: nobody new is admitted.
    Closed,
}

impl Mode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Keep => "keep",
            Mode::Governed => "governed",
            Mode::Pinned => "pinned",
            Mode::Open => "open",
            Mode::Closed => "closed",
        }
    }
}

/// A live override of one hunt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// Replaces the policy's max_hunters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_hunters: Option<u32>,
    /// Replaces the policy's min_hunters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_hunters: Option<u32>,
    /// The pinned ratio (with [`Mode::Pinned`] or [`Mode::Keep`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_ratio: Option<f64>,
    /// How the ratio is driven.
    #[serde(default)]
    pub mode: Mode,
    /// Why it was set.
    pub reason: String,
    /// Who set it.
    pub by: String,
    /// When (ms since the epoch).
    pub at_ms: Millis,
    /// When it lapses by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<Millis>,
}

impl Override {
    /// Whether it is in force at `now`.
    pub fn live(&self, now: Millis) -> bool {
        self.expires_at_ms.is_none_or(|t| now < t)
    }

    /// The pin it puts on the hunt: `Some(Some(r))` pins at r, `Some(None)` un-pins,
    /// `None` keeps the policy's.
    fn pin(&self) -> Option<Option<f64>> {
        match self.mode {
            Mode::Keep => self.pin_ratio.map(Some),
            Mode::Governed => Some(None),
            Mode::Pinned => Some(self.pin_ratio),
            Mode::Open => Some(Some(1.0)),
            Mode::Closed => Some(Some(0.0)),
        }
    }
}

/// A hunt started through the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Started {
    /// Its capacity (used when no policy file governs it).
    pub max_hunters: u32,
    /// Its floor.
    pub min_hunters: u32,
    /// Who started it.
    pub by: String,
    /// When.
    pub at_ms: Millis,
    /// Why.
    pub reason: String,
}

/// What the API holds about one hunt.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HuntControl {
    /// Started through the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<Started>,
    /// Ended through the API (kept only while a policy file names the hunt).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ended: bool,
    /// The override.
    #[serde(default, rename = "override", skip_serializing_if = "Option::is_none")]
    pub overrides: Option<Override>,
}

impl HuntControl {
    fn is_empty(&self) -> bool {
        self.started.is_none() && !self.ended && self.overrides.is_none()
    }
}

/// One audited mutation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// When (ms since the epoch).
    pub at_ms: Millis,
    /// Who (the token's name, `governor` for an expiry).
    pub by: String,
    /// `set_override`, `clear_override`, `start_hunt`, `end_hunt`, `expire_override`.
    pub action: String,
    /// The hunt.
    pub hunt: String,
    /// Why.
    pub reason: String,
    /// What changed, as JSON.
    pub detail: String,
    /// The replica that applied it.
    pub replica: String,
}

/// Everything the API set, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorState {
    /// [`FORMAT`].
    pub format: u32,
    /// Increases with every stored change (the compare-and-set token).
    pub revision: u64,
    /// Per canonical hunt id.
    pub hunts: BTreeMap<String, HuntControl>,
    /// The latest [`MAX_AUDIT`] mutations, oldest first.
    pub audit: VecDeque<AuditEntry>,
}

impl Default for OperatorState {
    fn default() -> Self {
        Self {
            format: FORMAT,
            revision: 0,
            hunts: BTreeMap::new(),
            audit: VecDeque::new(),
        }
    }
}

/// One change asked through the API.
#[derive(Debug, Clone, PartialEq)]
pub enum Mutation {
    /// Sets (replaces) a hunt's override.
    SetOverride {
        /// The hunt id as given.
        hunt: String,
        /// New max_hunters.
        max_hunters: Option<u32>,
        /// New min_hunters.
        min_hunters: Option<u32>,
        /// Pinned ratio.
        pin_ratio: Option<f64>,
        /// Mode.
        mode: Mode,
        /// Why.
        reason: String,
        /// Lifetime.
        ttl_s: Option<u32>,
    },
    /// Removes a hunt's override.
    ClearOverride {
        /// The hunt id as given.
        hunt: String,
        /// Why.
        reason: String,
    },
    /// Governs a hunt before its players arrive.
    StartHunt {
        /// The hunt id as given.
        hunt: String,
        /// Its capacity (default: the default spec's).
        max_hunters: Option<u32>,
        /// Its floor.
        min_hunters: Option<u32>,
        /// Why.
        reason: String,
    },
    /// Ends a hunt.
    EndHunt {
        /// The hunt id as given.
        hunt: String,
        /// Why.
        reason: String,
    },
    /// Drops the overrides whose lifetime ended (the governor's own housekeeping).
    Expire,
}

/// Who applies a mutation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The caller's name (the token's).
    pub by: String,
    /// This replica.
    pub replica: String,
}

/// Why a mutation was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OperatorError {
    /// A field is malformed or out of range (gRPC INVALID_ARGUMENT).
    #[error("{field}: {problem}")]
    Invalid {
        /// The request field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The hunt is not governed (NOT_FOUND).
    #[error("hunt: `{0}` is not governed (no policy file, not started, no override)")]
    NotFound(String),
    /// Too many API hunts (RESOURCE_EXHAUSTED).
    #[error("hunt: the API already controls {MAX_API_HUNTS} hunts; end or clear some first")]
    Full,
    /// The store failed (UNAVAILABLE).
    #[error("override store: {0}")]
    Store(String),
}

fn invalid(field: &'static str, problem: impl Into<String>) -> OperatorError {
    OperatorError::Invalid {
        field,
        problem: problem.into(),
    }
}

/// The canonical form of a hunt id given in a request, or the error naming `hunt`.
pub fn hunt_id(raw: &str) -> Result<String, OperatorError> {
    huntgate_core::hunt_id::normalize_hunt_id(raw).map_err(|_| {
        invalid(
            "hunt",
            format!(
                "`{}` is not a hunt id (1–{} characters of [A-Za-z0-9._-])",
                crate::text::echo(raw),
                huntgate_core::hunt_id::MAX_HUNT_ID_LEN
            ),
        )
    })
}

fn reason(raw: &str) -> Result<String, OperatorError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(invalid("reason", "required: say why (it is audited)"));
    }
    if trimmed.len() > MAX_REASON_BYTES {
        return Err(invalid(
            "reason",
            format!("{} bytes, at most {MAX_REASON_BYTES}", trimmed.len()),
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(invalid("reason", "control characters are not allowed"));
    }
    Ok(trimmed.to_owned())
}

fn hunters(field: &'static str, n: u32) -> Result<u32, OperatorError> {
    let bound = huntgate_core::config::MAX_HUNTERS_LIMIT;
    if n > bound {
        return Err(invalid(
            field,
            format!("{n} is above {bound}, the filter's bound"),
        ));
    }
    Ok(n)
}

/// The spec a hunt has without any override: its policy file's, or the default spec with
/// the started values. `None`: the hunt is not governed.
fn base_spec(policy: &Policy, hunt: &str, control: Option<&HuntControl>) -> Option<HuntSpec> {
    if let Some(spec) = policy.hunts.get(hunt) {
        return Some(spec.clone());
    }
    let started = control.and_then(|c| c.started.as_ref());
    let overridden = control.is_some_and(|c| c.overrides.is_some());
    if started.is_none() && !overridden {
        return None;
    }
    let mut spec = policy.default.clone();
    if let Some(s) = started {
        spec.max_hunters = s.max_hunters;
        spec.min_hunters = s.min_hunters;
    }
    Some(spec)
}

/// A hunt's spec with its override applied (`None` for an override past its life).
fn overridden(mut spec: HuntSpec, o: Option<&Override>, now: Millis) -> HuntSpec {
    if let Some(o) = o.filter(|o| o.live(now)) {
        if let Some(m) = o.max_hunters {
            spec.max_hunters = m;
        }
        if let Some(m) = o.min_hunters {
            spec.min_hunters = m;
        }
        if let Some(pin) = o.pin() {
            spec.pin_ratio = pin;
        }
    }
    spec.min_hunters = spec.min_hunters.min(spec.max_hunters);
    spec
}

/// The policy the law runs on at `now`: the files' policy with every live override,
/// start and end applied (see the module docs for the precedence).
pub fn effective(policy: &Policy, state: &OperatorState, now: Millis) -> Policy {
    let mut out = policy.clone();
    for (hunt, control) in &state.hunts {
        if control.ended && control.started.is_none() {
            out.hunts.remove(hunt);
            continue;
        }
        if let Some(spec) = base_spec(policy, hunt, Some(control)) {
            // An expired override of an API-only hunt leaves the default spec, which is
            // what the hunt had before the override.
            let spec = overridden(spec, control.overrides.as_ref(), now);
            out.hunts.insert(hunt.clone(), spec);
        }
    }
    out
}

/// Whether some override lapsed at `now` (then [`Mutation::Expire`] tidies the state).
pub fn has_expired(state: &OperatorState, now: Millis) -> bool {
    state
        .hunts
        .values()
        .any(|c| c.overrides.as_ref().is_some_and(|o| !o.live(now)))
}

/// Applies `mutation` by `actor` at `now` over the policy files' `policy`: the next state
/// (revision + 1, audit entry appended), or why it was refused.
pub fn apply(
    state: &OperatorState,
    mutation: &Mutation,
    actor: &Actor,
    policy: &Policy,
    now: Millis,
) -> Result<OperatorState, OperatorError> {
    let mut next = state.clone();
    let mut entries = Vec::new();
    let mut audit = |action: &str, hunt: &str, reason: &str, detail: serde_json::Value| {
        entries.push(AuditEntry {
            at_ms: now,
            by: actor.by.clone(),
            action: action.to_owned(),
            hunt: hunt.to_owned(),
            reason: reason.to_owned(),
            detail: detail.to_string(),
            replica: actor.replica.clone(),
        });
    };
    match mutation {
        Mutation::SetOverride {
            hunt,
            max_hunters,
            min_hunters,
            pin_ratio,
            mode,
            reason: why,
            ttl_s,
        } => {
            let hunt = hunt_id(hunt)?;
            let max_hunters = max_hunters.map(|n| hunters("max_hunters", n)).transpose()?;
            if max_hunters == Some(0) {
                return Err(invalid(
                    "max_hunters",
                    "must be at least 1 (use mode MODE_CLOSED to admit nobody new)",
                ));
            }
            let min_hunters = min_hunters.map(|n| hunters("min_hunters", n)).transpose()?;
            if let Some(r) = pin_ratio {
                if !r.is_finite() || !(0.0..=1.0).contains(r) {
                    return Err(invalid("pin_ratio", format!("{r} is not in [0, 1]")));
                }
            }
            match (mode, pin_ratio) {
                (Mode::Pinned, None) => {
                    return Err(invalid("pin_ratio", "required with MODE_PINNED"));
                }
                (Mode::Governed | Mode::Open | Mode::Closed, Some(_)) => {
                    return Err(invalid(
                        "pin_ratio",
                        format!(
                            "only with MODE_PINNED or MODE_UNSPECIFIED, not mode {}",
                            mode.as_str()
                        ),
                    ));
                }
                _ => {}
            }
            if max_hunters.is_none()
                && min_hunters.is_none()
                && pin_ratio.is_none()
                && *mode == Mode::Keep
            {
                return Err(invalid(
                    "max_hunters",
                    "the override sets nothing: give max_hunters, min_hunters, pin_ratio or a mode",
                ));
            }
            if let Some(t) = ttl_s {
                if *t == 0 || *t > MAX_TTL_S {
                    return Err(invalid("ttl_s", format!("{t} is not in [1, {MAX_TTL_S}]")));
                }
            }
            let why = reason(why)?;
            let control = next.hunts.get(&hunt).cloned().unwrap_or_default();
            let base = base_spec(policy, &hunt, Some(&control)).unwrap_or_else(|| {
                let mut spec = policy.default.clone();
                spec.min_hunters = 0;
                spec
            });
            let max = max_hunters.unwrap_or(base.max_hunters);
            let min = min_hunters.unwrap_or(if max_hunters.is_some() {
                base.min_hunters.min(max)
            } else {
                base.min_hunters
            });
            if min > max {
                let field = if min_hunters.is_some() {
                    "min_hunters"
                } else {
                    "max_hunters"
                };
                return Err(invalid(
                    field,
                    format!("min_hunters {min} is above max_hunters {max}"),
                ));
            }
            if control.is_empty()
                && !policy.hunts.contains_key(&hunt)
                && api_hunts(&next) >= MAX_API_HUNTS
            {
                return Err(OperatorError::Full);
            }
            let o = Override {
                max_hunters,
                min_hunters,
                pin_ratio: *pin_ratio,
                mode: *mode,
                reason: why.clone(),
                by: actor.by.clone(),
                at_ms: now,
                expires_at_ms: ttl_s.map(|t| now.saturating_add(u64::from(t) * 1000)),
            };
            let detail = serde_json::json!({
                "max_hunters": o.max_hunters, "min_hunters": o.min_hunters,
                "pin_ratio": o.pin_ratio, "mode": o.mode.as_str(), "expires_at_ms": o.expires_at_ms,
            });
            let entry = next.hunts.entry(hunt.clone()).or_default();
            entry.overrides = Some(o);
            entry.ended = false;
            audit("set_override", &hunt, &why, detail);
        }
        Mutation::ClearOverride { hunt, reason: why } => {
            let hunt = hunt_id(hunt)?;
            let why = reason(why)?;
            let had = next
                .hunts
                .get_mut(&hunt)
                .and_then(|c| c.overrides.take())
                .is_some();
            audit(
                "clear_override",
                &hunt,
                &why,
                serde_json::json!({ "had_override": had }),
            );
        }
        Mutation::StartHunt {
            hunt,
            max_hunters,
            min_hunters,
            reason: why,
        } => {
            let hunt = hunt_id(hunt)?;
            let max_hunters = max_hunters.map(|n| hunters("max_hunters", n)).transpose()?;
            let min_hunters = min_hunters.map(|n| hunters("min_hunters", n)).transpose()?;
            let why = reason(why)?;
            let has_file = policy.hunts.contains_key(&hunt);
            if has_file && (max_hunters.is_some() || min_hunters.is_some()) {
                let field = if max_hunters.is_some() {
                    "max_hunters"
                } else {
                    "min_hunters"
                };
                return Err(invalid(
                    field,
                    format!("hunt `{hunt}` has a policy file that sets it; use SetOverride to change it live"),
                ));
            }
            if max_hunters == Some(0) {
                return Err(invalid("max_hunters", "must be at least 1"));
            }
            let max = max_hunters.unwrap_or(policy.default.max_hunters);
            let min = min_hunters.unwrap_or(0);
            if min > max {
                return Err(invalid(
                    "min_hunters",
                    format!("{min} is above max_hunters {max}"),
                ));
            }
            let known = next.hunts.get(&hunt).is_some_and(|c| !c.is_empty());
            if !known && !has_file && api_hunts(&next) >= MAX_API_HUNTS {
                return Err(OperatorError::Full);
            }
            let entry = next.hunts.entry(hunt.clone()).or_default();
            entry.ended = false;
            if !has_file {
                entry.started = Some(Started {
                    max_hunters: max,
                    min_hunters: min,
                    by: actor.by.clone(),
                    at_ms: now,
                    reason: why.clone(),
                });
            }
            let detail = if has_file {
                serde_json::json!({ "policy_file": true })
            } else {
                serde_json::json!({ "max_hunters": max, "min_hunters": min })
            };
            audit("start_hunt", &hunt, &why, detail);
        }
        Mutation::EndHunt { hunt, reason: why } => {
            let hunt = hunt_id(hunt)?;
            let why = reason(why)?;
            let has_file = policy.hunts.contains_key(&hunt);
            let known = next
                .hunts
                .get(&hunt)
                .is_some_and(|c| c.started.is_some() || c.overrides.is_some());
            if !has_file && !known {
                return Err(OperatorError::NotFound(hunt));
            }
            let had = next.hunts.remove(&hunt);
            if has_file {
                next.hunts.insert(
                    hunt.clone(),
                    HuntControl {
                        ended: true,
                        ..HuntControl::default()
                    },
                );
            }
            let detail = serde_json::json!({
                "policy_file": has_file,
                "had_override": had.as_ref().is_some_and(|c| c.overrides.is_some()),
                "was_started": had.as_ref().is_some_and(|c| c.started.is_some()),
            });
            audit("end_hunt", &hunt, &why, detail);
        }
        Mutation::Expire => {
            for (hunt, control) in next.hunts.iter_mut() {
                if let Some(o) = control.overrides.take_if(|o| !o.live(now)) {
                    audit(
                        "expire_override",
                        hunt,
                        &o.reason,
                        serde_json::json!({ "set_by": o.by, "expires_at_ms": o.expires_at_ms }),
                    );
                }
            }
        }
    }
    // An end mark matters only while a policy file names the hunt.
    next.hunts.retain(|hunt, c| {
        !c.is_empty() && (!c.ended || c.started.is_some() || policy.hunts.contains_key(hunt))
    });
    for entry in entries {
        tracing::info!(
            target: "huntgate::audit",
            by = %entry.by,
            action = %entry.action,
            hunt = %entry.hunt,
            reason = %entry.reason,
            detail = %entry.detail,
            replica = %entry.replica,
            "audit"
        );
        next.audit.push_back(entry);
    }
    while next.audit.len() > MAX_AUDIT {
        next.audit.pop_front();
    }
    next.revision = state.revision.saturating_add(1);
    Ok(next)
}

/// Hunts the API controls without a policy file (counted against [`MAX_API_HUNTS`]).
fn api_hunts(state: &OperatorState) -> usize {
    state
        .hunts
        .values()
        .filter(|c| c.started.is_some() || c.overrides.is_some())
        .count()
}

/// Where a hunt's spec comes from, for `ListHunts`.
pub fn source(policy: &Policy, hunt: &str) -> &'static str {
    if policy.hunts.contains_key(hunt) {
        "policy_file"
    } else {
        "api"
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;

    fn actor() -> Actor {
        Actor {
            by: "orchestrator".into(),
            replica: "r1".into(),
        }
    }

    fn set(hunt: &str, max: Option<u32>, mode: Mode, pin: Option<f64>) -> Mutation {
        Mutation::SetOverride {
            hunt: hunt.into(),
            max_hunters: max,
            min_hunters: None,
            pin_ratio: pin,
            mode,
            reason: "spike".into(),
            ttl_s: None,
        }
    }

    fn file_policy() -> Policy {
        let mut p = Policy::default();
        let mut spec = p.default.clone();
        spec.max_hunters = 500;
        spec.pin_ratio = Some(0.5);
        p.hunts.insert("h1".into(), spec);
        p
    }

    #[test]
    fn an_override_replaces_the_fields_it_sets_and_the_file_keeps_the_rest() {
        let p = file_policy();
        let s = apply(
            &OperatorState::default(),
            &set("H1", Some(300), Mode::Keep, None),
            &actor(),
            &p,
            10,
        )
        .unwrap();
        let e = effective(&p, &s, 11);
        assert_eq!(e.hunts["h1"].max_hunters, 300);
        assert_eq!(e.hunts["h1"].pin_ratio, Some(0.5), "the file's pin stays");
        let s = apply(&s, &set("h1", None, Mode::Governed, None), &actor(), &p, 12).unwrap();
        let e = effective(&p, &s, 13);
        assert_eq!(
            e.hunts["h1"].max_hunters, 500,
            "a new override replaces the old one"
        );
        assert_eq!(
            e.hunts["h1"].pin_ratio, None,
            "governed sets the file's pin aside"
        );
        assert_eq!(s.audit.len(), 2);
        assert_eq!(s.revision, 2);
    }

    #[test]
    fn an_override_lapses_at_its_expiry_and_expire_tidies_it_with_an_audit_entry() {
        let p = file_policy();
        let mut m = set("h1", Some(100), Mode::Closed, None);
        if let Mutation::SetOverride { ttl_s, .. } = &mut m {
            *ttl_s = Some(60);
        }
        let s = apply(&OperatorState::default(), &m, &actor(), &p, 1_000).unwrap();
        assert_eq!(effective(&p, &s, 60_999).hunts["h1"].pin_ratio, Some(0.0));
        assert_eq!(effective(&p, &s, 61_000).hunts["h1"].pin_ratio, Some(0.5));
        assert!(has_expired(&s, 61_000));
        let s = apply(&s, &Mutation::Expire, &actor(), &p, 61_000).unwrap();
        assert!(s.hunts.is_empty());
        assert_eq!(s.audit.back().unwrap().action, "expire_override");
    }

    #[test]
    fn a_started_hunt_enters_the_policy_and_an_ended_file_hunt_leaves_it() {
        let p = file_policy();
        let start = Mutation::StartHunt {
            hunt: "h2".into(),
            max_hunters: Some(40),
            min_hunters: None,
            reason: "warm up".into(),
        };
        let s = apply(&OperatorState::default(), &start, &actor(), &p, 1).unwrap();
        assert_eq!(effective(&p, &s, 2).hunts["h2"].max_hunters, 40);
        let end = |h: &str| Mutation::EndHunt {
            hunt: h.into(),
            reason: "over".into(),
        };
        let s = apply(&s, &end("h2"), &actor(), &p, 3).unwrap();
        assert!(!effective(&p, &s, 4).hunts.contains_key("h2"));
        assert!(
            s.hunts.is_empty(),
            "nothing is kept of an API hunt once ended"
        );
        let s = apply(&s, &end("h1"), &actor(), &p, 5).unwrap();
        assert!(
            !effective(&p, &s, 6).hunts.contains_key("h1"),
            "ended although its file stays"
        );
        let restart = Mutation::StartHunt {
            hunt: "h1".into(),
            max_hunters: None,
            min_hunters: None,
            reason: "again".into(),
        };
        let s = apply(&s, &restart, &actor(), &p, 7).unwrap();
        assert_eq!(effective(&p, &s, 8).hunts["h1"].max_hunters, 500);
        assert_eq!(
            apply(&s, &end("nope"), &actor(), &p, 9),
            Err(OperatorError::NotFound("nope".into()))
        );
    }

    #[test]
    fn bad_input_is_refused_naming_the_field() {
        let p = file_policy();
        let s = OperatorState::default();
        let field = |m: Mutation| match apply(&s, &m, &actor(), &p, 1) {
            Err(OperatorError::Invalid { field, .. }) => field,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert_eq!(field(set("bad/id", Some(1), Mode::Keep, None)), "hunt");
        assert_eq!(
            field(set("h1", Some(20_000_000), Mode::Keep, None)),
            "max_hunters"
        );
        assert_eq!(field(set("h1", None, Mode::Pinned, None)), "pin_ratio");
        assert_eq!(field(set("h1", None, Mode::Keep, Some(1.5))), "pin_ratio");
        assert_eq!(field(set("h1", None, Mode::Open, Some(0.5))), "pin_ratio");
        assert_eq!(field(set("h1", None, Mode::Keep, None)), "max_hunters");
        let mut m = set("h1", Some(10), Mode::Keep, None);
        if let Mutation::SetOverride { reason, .. } = &mut m {
            *reason = "x".repeat(MAX_REASON_BYTES + 1);
        }
        assert_eq!(field(m), "reason");
        let mut m = set("h1", Some(10), Mode::Keep, None);
        if let Mutation::SetOverride { min_hunters, .. } = &mut m {
            *min_hunters = Some(11);
        }
        assert_eq!(field(m), "min_hunters");
    }

    #[test]
    fn the_audit_log_is_bounded() {
        let p = file_policy();
        let mut s = OperatorState::default();
        for i in 0..(MAX_AUDIT + 10) {
            s = apply(
                &s,
                &set("h1", Some(1 + i as u32), Mode::Keep, None),
                &actor(),
                &p,
                i as u64,
            )
            .unwrap();
        }
        assert_eq!(s.audit.len(), MAX_AUDIT);
        assert_eq!(s.audit.back().unwrap().at_ms, (MAX_AUDIT + 9) as u64);
    }
}
