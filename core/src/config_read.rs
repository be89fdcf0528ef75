//! Reads the plugin configuration's JSON into [`ConfigSpec`]: every member
//! typed, unknown and repeated members refused, each error naming its field.
//! Defaults come from the spec types themselves (`config`); validation and
//! compilation happen afterwards, in [`crate::config::Config::compile`].

use crate::config::{
    ConfigSpec, Decision, GovernorSpec, HuntOverrideSpec, HuntSourceSpec, HunterSourceSpec, Mode,
    OnStaleSpec, RejectSpec, SecretSpec, SessionEndSpec, UnlistedPolicy, UntrackedPolicy,
    WaitingRoomSpec,
};
use crate::json::{JsonError, Kind, Reader, Seen};

/// Reads a whole configuration document (nothing may follow it).
#[inline(never)]
pub fn read_config(bytes: &[u8]) -> Result<ConfigSpec, JsonError> {
    const FIELDS: &[&str] = &[
        "mode",
        "hunt",
        "hunter",
        "session_ttl_s",
        "ticket_secrets",
        "max_hunters",
        "hunts",
        "reject",
        "max_tracked_hunts",
        "untracked_hunts",
        "unlisted_hunts",
        "max_hunt_metrics",
        "mark_decisions",
        "governor",
        "standalone",
        "session_end",
        "waiting_room",
    ];
    let mut r = Reader::new(bytes);
    let mut spec = ConfigSpec::defaults();
    let mut seen = Seen::default();
    r.object(|r, key| {
        match seen.first(r, &key, FIELDS)? {
            "mode" => spec.mode = read_mode(r)?,
            "hunt" => spec.hunt = read_hunt_source(r)?,
            "hunter" => spec.hunter = read_hunter_source(r)?,
            "session_ttl_s" => spec.session_ttl_s = r.u64()?,
            "ticket_secrets" => r.array(|r| {
                spec.ticket_secrets.push(read_secret(r)?);
                Ok(())
            })?,
            "max_hunters" => spec.max_hunters = r.u32()?,
            "hunts" => r.entries(&mut spec.hunts, read_hunt_override)?,
            "reject" => spec.reject = read_reject(r)?,
            "max_tracked_hunts" => spec.max_tracked_hunts = r.u32()?,
            "untracked_hunts" => {
                spec.untracked_hunts = match r.variant(&["pass", "reject"])? {
                    "pass" => UntrackedPolicy::Pass,
                    _ => UntrackedPolicy::Reject,
                }
            }
            "unlisted_hunts" => {
                spec.unlisted_hunts = match r.variant(&["admit", "reject"])? {
                    "reject" => UnlistedPolicy::Reject,
                    _ => UnlistedPolicy::Admit,
                }
            }
            "max_hunt_metrics" => spec.max_hunt_metrics = r.u32()?,
            "mark_decisions" => {
                spec.mark_decisions.clear();
                r.array(|r| {
                    spec.mark_decisions.push(read_decision(r)?);
                    Ok(())
                })?;
            }
            "governor" => spec.governor = r.optional(read_governor)?,
            "standalone" => spec.standalone = r.bool()?,
            "session_end" => spec.session_end = read_session_end(r)?,
            _ => spec.waiting_room = read_waiting_room(r)?,
        }
        Ok(())
    })?;
    if !seen.has("ticket_secrets") {
        return Err(r.error("missing field `ticket_secrets`"));
    }
    r.end()?;
    Ok(spec)
}

#[inline(never)]
fn read_mode(r: &mut Reader<'_>) -> Result<Mode, JsonError> {
    Ok(match r.variant(&["enforce", "shadow"])? {
        "shadow" => Mode::Shadow,
        _ => Mode::Enforce,
    })
}

#[inline(never)]
fn read_decision(r: &mut Reader<'_>) -> Result<Decision, JsonError> {
    Ok(
        match r.variant(&["admitted", "session", "would-reject", "untracked"])? {
            "session" => Decision::Session,
            "would-reject" => Decision::WouldReject,
            "untracked" => Decision::Untracked,
            _ => Decision::Admitted,
        },
    )
}

/// An object of exactly one member among `variants`: its name, with the reader at its value.
#[inline(never)]
fn read_one_of<T>(
    r: &mut Reader<'_>,
    variants: &[&'static str],
    mut read: impl FnMut(&mut Reader<'_>, &'static str) -> Result<T, JsonError>,
) -> Result<T, JsonError> {
    let mut value = None;
    r.object(|r, key| {
        let variant = Seen::default().first(r, &key, variants)?;
        if value.is_some() {
            return Err(r.error(format!(
                "only one of {} may be given",
                crate::json::one_of(variants)
            )));
        }
        value = Some(read(r, variant)?);
        Ok(())
    })?;
    value.ok_or_else(|| {
        r.error(format!(
            "expected one of {} as the only member",
            crate::json::one_of(variants)
        ))
    })
}

#[inline(never)]
fn read_hunt_source(r: &mut Reader<'_>) -> Result<HuntSourceSpec, JsonError> {
    read_one_of(r, &["path_prefix", "header"], |r, variant| {
        let text = r.string()?;
        Ok(match variant {
            "header" => HuntSourceSpec::Header(text),
            _ => HuntSourceSpec::PathPrefix(text),
        })
    })
}

#[inline(never)]
fn read_hunter_source(r: &mut Reader<'_>) -> Result<HunterSourceSpec, JsonError> {
    read_one_of(r, &["header", "anonymous"], |r, variant| {
        Ok(match variant {
            "anonymous" => HunterSourceSpec::Anonymous(r.bool()?),
            _ => HunterSourceSpec::Header(r.string()?),
        })
    })
}

#[inline(never)]
fn read_secret(r: &mut Reader<'_>) -> Result<SecretSpec, JsonError> {
    match r.peek()? {
        Kind::String => r.string().map(SecretSpec::Inline),
        Kind::Object => read_one_of(r, &["env"], |r, _| {
            r.string().map(|env| SecretSpec::Env { env })
        }),
        _ => Err(r.type_error("a secret string or {\"env\": NAME}")),
    }
}

#[inline(never)]
fn read_hunt_override(r: &mut Reader<'_>) -> Result<HuntOverrideSpec, JsonError> {
    const FIELDS: &[&str] = &["max_hunters", "mode", "waiting_room"];
    let mut spec = HuntOverrideSpec::default();
    let mut seen = Seen::default();
    r.object(|r, key| {
        match seen.first(r, &key, FIELDS)? {
            "max_hunters" => spec.max_hunters = r.optional(Reader::u32)?,
            "mode" => spec.mode = r.optional(read_mode)?,
            _ => spec.waiting_room = r.optional(read_waiting_room)?,
        }
        Ok(())
    })?;
    Ok(spec)
}

#[inline(never)]
fn read_waiting_room(r: &mut Reader<'_>) -> Result<WaitingRoomSpec, JsonError> {
    const FIELDS: &[&str] = &[
        "enabled",
        "max_queue",
        "queue_ttl_s",
        "retry_after_s",
        "grace_s",
        "page",
    ];
    let mut spec = WaitingRoomSpec::default();
    let mut seen = Seen::default();
    r.object(|r, key| {
        match seen.first(r, &key, FIELDS)? {
            "enabled" => spec.enabled = r.optional(Reader::bool)?,
            "max_queue" => spec.max_queue = r.optional(Reader::u32)?,
            "queue_ttl_s" => spec.queue_ttl_s = r.optional(Reader::u32)?,
            "retry_after_s" => spec.retry_after_s = r.optional(Reader::u32)?,
            "grace_s" => spec.grace_s = r.optional(Reader::u32)?,
            _ => spec.page = r.optional(Reader::string)?,
        }
        Ok(())
    })?;
    Ok(spec)
}

#[inline(never)]
fn read_reject(r: &mut Reader<'_>) -> Result<RejectSpec, JsonError> {
    const FIELDS: &[&str] = &["status", "retry_after_s"];
    let mut spec = RejectSpec::default();
    let mut seen = Seen::default();
    r.object(|r, key| {
        match seen.first(r, &key, FIELDS)? {
            "status" => spec.status = r.u32()?,
            _ => spec.retry_after_s = r.u32()?,
        }
        Ok(())
    })?;
    Ok(spec)
}

#[inline(never)]
fn read_session_end(r: &mut Reader<'_>) -> Result<SessionEndSpec, JsonError> {
    const FIELDS: &[&str] = &["header", "leave_path"];
    let mut spec = SessionEndSpec::default();
    let mut seen = Seen::default();
    r.object(|r, key| {
        match seen.first(r, &key, FIELDS)? {
            "header" => spec.header = r.optional(Reader::string)?,
            _ => spec.leave_path = r.optional(Reader::string)?,
        }
        Ok(())
    })?;
    Ok(spec)
}

#[inline(never)]
fn read_on_stale(r: &mut Reader<'_>) -> Result<OnStaleSpec, JsonError> {
    if r.peek()? == Kind::String {
        return Ok(match r.variant(&["fail_open", "fail_closed"])? {
            "fail_open" => OnStaleSpec::FailOpen,
            _ => OnStaleSpec::FailClosed,
        });
    }
    if r.peek()? != Kind::Object {
        return Err(r.type_error("`fail_open`, `fail_closed` or {\"ratio\": R}"));
    }
    read_one_of(r, &["ratio"], |r, _| r.f64().map(OnStaleSpec::Ratio))
}

#[inline(never)]
fn read_governor(r: &mut Reader<'_>) -> Result<GovernorSpec, JsonError> {
    const FIELDS: &[&str] = &[
        "cluster",
        "authority",
        "path",
        "poll_interval_ms",
        "long_poll_s",
        "timeout_ms",
        "max_stale_s",
        "on_stale",
        "leases",
        "leases_path",
        "proxy_id",
        "safe_share",
    ];
    let mut spec = GovernorSpec::defaults();
    let mut seen = Seen::default();
    r.object(|r, key| {
        match seen.first(r, &key, FIELDS)? {
            "cluster" => spec.cluster = r.string()?,
            "authority" => spec.authority = r.optional(Reader::string)?,
            "path" => spec.path = r.string()?,
            "poll_interval_ms" => spec.poll_interval_ms = r.u32()?,
            "long_poll_s" => spec.long_poll_s = r.u32()?,
            "timeout_ms" => spec.timeout_ms = r.u32()?,
            "max_stale_s" => spec.max_stale_s = r.u32()?,
            "on_stale" => spec.on_stale = read_on_stale(r)?,
            "leases" => spec.leases = r.bool()?,
            "leases_path" => spec.leases_path = r.string()?,
            "proxy_id" => spec.proxy_id = r.optional(Reader::string)?,
            _ => spec.safe_share = r.u32()?,
        }
        Ok(())
    })?;
    if !seen.has("cluster") {
        return Err(r.error("missing field `cluster`"));
    }
    Ok(spec)
}
