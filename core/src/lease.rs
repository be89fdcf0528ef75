//! The lease exchange's report: what one Envoy process tells the governor each
//! period (`governor.leases: true`), per hunt: the sessions it counts, the joins
//! it rejected since its previous report (unmet demand), and the share it
//! enforces now (its acknowledgement of the last grant).
//!
//! Wire format (`POST governor.leases_path`, JSON):
//! `{"proxy": ID, "incarnation": PROCESS_ID, "session_ttl_s": N, "hunts": {HUNT:
//! {"active": N, "rejected": N, "share": N}}, "ends": [[KEY, ENDED_MS], …],
//! "ends_after": CURSOR}`
//! (`share` omitted when the proxy holds no live share of that hunt; `ends`, the
//! sessions this process ended that it has not reported yet, each a hunter key as
//! 16 hex digits and the end time in ms, at most [`MAX_REPORTED_ENDS`], omitted
//! when none; `ends_after`, the cursor of the last fleet ends received, omitted
//! before the first). The answer is the throttle document plus `"leases":
//! {"lease_ms": N, "hunts": {HUNT: {"share": N}}}`
//! ([`crate::throttle::LeaseGrant`]) and `"ends": {"cursor": CURSOR, "sessions":
//! [[KEY, ENDED_MS], …]}`: the ends other proxies reported after `ends_after`
//! ([`FleetEnds`]), which the fetcher records before it publishes the rest.

use hashbrown::HashMap;

use crate::json::{push_string, JsonError, ObjectWriter, Reader, Seen};

/// One hunt's line of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HuntReport {
    /// Canonical hunt id.
    pub hunt: String,
    /// Sessions this process counts for the hunt.
    pub active: u32,
    /// Joins rejected since the previous report.
    pub rejected: u32,
    /// The share this process enforces now, if it holds a live one.
    pub share: Option<u32>,
}

/// Most ends one report carries (the rest go in the next ones).
pub const MAX_REPORTED_ENDS: usize = 4096;
/// Most ends one answer may carry.
pub const MAX_ANSWERED_ENDS: usize = 2_048;
/// Longest cursor accepted from the governor.
pub const MAX_CURSOR_LEN: usize = 128;

/// The `ends` member of an exchange's answer: sessions other proxies ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FleetEnds {
    /// Where the next report's `ends_after` resumes.
    pub cursor: String,
    /// (hunter key, ended at ms), as the ending proxy recorded them.
    pub sessions: Vec<(u64, u64)>,
}

/// A hunter key as the wire carries it: 16 lowercase hex digits.
pub fn key_hex(key: u64) -> String {
    format!("{key:016x}")
}

/// A hunter key read back from [`key_hex`]'s form (exactly 16 hex digits).
pub fn parse_key_hex(text: &str) -> Option<u64> {
    if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

/// The `ends` member of a lease answer as written, before validation.
struct WireEnds {
    cursor: String,
    sessions: Vec<(String, u64)>,
}

/// Reads the `ends` member of a lease answer, ignoring the others (the throttle
/// document's, read by [`crate::throttle::ThrottleTable::decode`]).
fn read_answer_ends(body: &[u8]) -> Result<Option<WireEnds>, JsonError> {
    let mut r = Reader::new(body);
    let mut ends = None;
    let mut seen = Seen::default();
    r.object(|r, key| {
        match seen.known(r, &key, &["ends"])? {
            Some(_) => ends = r.optional(read_wire_ends)?,
            None => r.skip()?,
        }
        Ok(())
    })?;
    r.end()?;
    Ok(ends)
}

fn read_wire_ends(r: &mut Reader<'_>) -> Result<WireEnds, JsonError> {
    let mut cursor = None;
    let mut sessions = Vec::new();
    let mut seen = Seen::default();
    r.object(|r, key| {
        match seen.first(r, &key, &["cursor", "sessions"])? {
            "cursor" => cursor = Some(r.string()?),
            _ => r.array(|r| {
                sessions.push(read_wire_end(r)?);
                Ok(())
            })?,
        }
        Ok(())
    })?;
    let cursor = cursor.ok_or_else(|| r.error("missing field `cursor`"))?;
    Ok(WireEnds { cursor, sessions })
}

/// One `[KEY, ENDED_MS]` pair.
fn read_wire_end(r: &mut Reader<'_>) -> Result<(String, u64), JsonError> {
    let (mut key, mut at, mut count) = (None, None, 0);
    r.array(|r| {
        match count {
            0 => key = Some(r.string()?),
            1 => at = Some(r.u64()?),
            _ => return Err(r.error("expected [KEY, ENDED_MS]")),
        }
        count += 1;
        Ok(())
    })?;
    match (key, at) {
        (Some(key), Some(at)) => Ok((key, at)),
        _ => Err(r.error("expected [KEY, ENDED_MS]")),
    }
}

impl FleetEnds {
    /// Reads the `ends` member of a lease answer (`None` when it has none); the
    /// error names the field.
    #[inline(never)]
    pub fn decode_answer(body: &[u8]) -> Result<Option<Self>, String> {
        let Some(ends) = read_answer_ends(body).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let cursor = ends.cursor;
        if cursor.is_empty()
            || cursor.len() > MAX_CURSOR_LEN
            || !cursor.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(format!(
                "ends.cursor: must be 1-{MAX_CURSOR_LEN} visible ASCII characters"
            ));
        }
        if ends.sessions.len() > MAX_ANSWERED_ENDS {
            return Err(format!("ends.sessions: at most {MAX_ANSWERED_ENDS}"));
        }
        let mut sessions = Vec::with_capacity(ends.sessions.len());
        for (i, (key, at)) in ends.sessions.iter().enumerate() {
            let key = parse_key_hex(key)
                .ok_or_else(|| format!("ends.sessions[{i}]: the key must be 16 hex digits"))?;
            if at & crate::store::FLEET_END != 0 {
                return Err(format!("ends.sessions[{i}]: the end must be a time in ms"));
            }
            sessions.push((key, *at));
        }
        Ok(Some(Self { cursor, sessions }))
    }
}

/// The fetcher's bookkeeping of the ends it shares: which of this process's
/// ends the governor has acknowledged, and the cursor of the fleet ends received.
///
/// A scan (of the ended-session lists, when their generations moved) adds to
/// `pending` every local end not acknowledged at that time or later (an end
/// another worker writes after a scan, whatever its time stamp, is found by
/// the next one: its write moves the generations); a report carries the first
/// [`MAX_REPORTED_ENDS`] of them; an answer with `ends` acknowledges those. An
/// end may be reported twice (another fetcher worker, a lost answer): the
/// governor's log and every proxy's lists keep one entry per hunter key.
/// Both maps are bounded by the lists (ends older than `keep_ms` leave them).
#[derive(Debug, Default)]
pub struct EndsTracker {
    acknowledged: HashMap<u64, u64>,
    scanned_generations: Vec<u8>,
    pending: Vec<(u64, u64)>,
    in_flight: Option<Vec<(u64, u64)>>,
    /// The cursor of the fleet ends recorded last (the next report's `ends_after`).
    pub cursor: Option<String>,
}

impl EndsTracker {
    /// Whether the lists' `generations` moved since the last scan.
    pub fn needs_scan(&self, generations: &[u8]) -> bool {
        self.scanned_generations.is_empty() || self.scanned_generations != generations
    }

    /// Takes the local ends read at `now_ms` under `generations`; ends older than
    /// `keep_ms` (their tickets have expired) are no longer worth sharing.
    pub fn scanned(
        &mut self,
        generations: Vec<u8>,
        local: Vec<(u64, u64)>,
        now_ms: u64,
        keep_ms: u64,
    ) {
        let live = |at: u64| at.saturating_add(keep_ms) >= now_ms;
        self.pending.retain(|(_, at)| live(*at));
        self.acknowledged.retain(|_, at| live(*at));
        let mut index: HashMap<u64, usize> = self
            .pending
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (*k, i))
            .collect();
        for (key, at) in local {
            let shared = self
                .acknowledged
                .get(&key)
                .is_some_and(|acked| *acked >= at);
            if shared || !live(at) {
                continue;
            }
            match index.get(&key).and_then(|&i| self.pending.get_mut(i)) {
                Some(entry) => entry.1 = entry.1.max(at),
                None => {
                    index.insert(key, self.pending.len());
                    self.pending.push((key, at));
                }
            }
        }
        crate::sort::sort_by(&mut self.pending, |a, b| a.1 < b.1);
        self.scanned_generations = generations;
    }

    /// The ends the next report carries (the oldest first), now in flight.
    pub fn report(&mut self) -> EndsReport {
        let ends: Vec<(u64, u64)> = self
            .pending
            .iter()
            .take(MAX_REPORTED_ENDS)
            .copied()
            .collect();
        self.in_flight = Some(ends.clone());
        EndsReport {
            ends,
            after: self.cursor.clone(),
        }
    }

    /// The governor answered the report in flight with its `ends` member: the
    /// ends it carried are shared.
    pub fn acknowledged(&mut self) {
        if let Some(sent) = self.in_flight.take() {
            for (key, at) in sent {
                let acked = self.acknowledged.entry(key).or_insert(at);
                *acked = (*acked).max(at);
            }
            let acknowledged = &self.acknowledged;
            self.pending
                .retain(|(key, at)| acknowledged.get(key).is_none_or(|acked| acked < at));
        }
    }

    /// The report in flight got no answer that acknowledges it: its ends are
    /// reported again.
    pub fn unacknowledged(&mut self) {
        self.in_flight = None;
    }

    /// Local ends found but not acknowledged yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

/// The rejected-join totals last reported, to report deltas.
#[derive(Debug, Default)]
pub struct DemandTracker {
    reported: HashMap<String, u32>,
}

impl DemandTracker {
    /// Joins rejected since the last report of `hunt`, given the running total
    /// (a wrapping counter); remembers `total` as reported.
    pub fn since_last(&mut self, hunt: &str, total: u32) -> u32 {
        let previous = self.reported.insert(hunt.to_string(), total).unwrap_or(0);
        total.wrapping_sub(previous)
    }
}

/// What one report carries besides its hunts: the ends this process recorded and
/// has not reported yet, and the cursor of the fleet ends it has received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndsReport {
    /// (hunter key, ended at ms), at most [`MAX_REPORTED_ENDS`].
    pub ends: Vec<(u64, u64)>,
    /// The cursor of the last fleet ends recorded.
    pub after: Option<String>,
}

/// The report body for `proxy` from the Envoy process `incarnation` (its random
/// process id: the governor keeps a predecessor's seats apart), whose sessions live
/// `session_ttl_s` past their last renewal (the governor keeps a silent proxy's seats
/// that long).
pub fn encode_report(
    proxy: &str,
    incarnation: &str,
    session_ttl_s: u32,
    hunts: &[HuntReport],
    ends: &EndsReport,
) -> Vec<u8> {
    let mut lines = ObjectWriter::new();
    for line in hunts {
        let mut entry = ObjectWriter::new()
            .number("active", line.active.into())
            .number("rejected", line.rejected.into());
        if let Some(share) = line.share {
            entry = entry.number("share", share.into());
        }
        lines = lines.raw(&line.hunt, &entry.finish());
    }
    let mut report = ObjectWriter::new();
    if !ends.ends.is_empty() {
        let mut listed = String::from("[");
        for (i, (key, at)) in ends.ends.iter().enumerate() {
            if i > 0 {
                listed.push(',');
            }
            listed.push('[');
            push_string(&mut listed, &key_hex(*key));
            listed.push(',');
            listed.push_str(&at.to_string());
            listed.push(']');
        }
        listed.push(']');
        report = report.raw("ends", &listed);
    }
    if let Some(after) = &ends.after {
        report = report.string("ends_after", after);
    }
    report
        .raw("hunts", &lines.finish())
        .string("incarnation", incarnation)
        .string("proxy", proxy)
        .number("session_ttl_s", session_ttl_s.into())
        .finish()
        .into_bytes()
}
