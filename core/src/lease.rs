//! The lease exchange's report: what one Envoy process tells the governor each
//! period (`governor.leases: true`), per hunt: the sessions it counts, the joins
//! it rejected since its previous report (unmet demand), and the share it
//! enforces now (its acknowledgement of the last grant).
//!
//! Wire format (`POST governor.leases_path`, JSON):
//! `{"proxy": ID, "incarnation": PROCESS_ID, "session_ttl_s": N, "hunts": {HUNT:
//! {"active": N, "rejected": N, "share": N}}}`
//! (`share` omitted when the proxy holds no live share of that hunt). The
//! answer is the throttle document plus `"leases": {"lease_ms": N, "hunts":
//! {HUNT: {"share": N}}}` ([`crate::throttle::LeaseGrant`]).

use hashbrown::HashMap;
use serde_json::{json, Map, Value};

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

/// The report body for `proxy` from the Envoy process `incarnation` (its random
/// process id: the governor keeps a predecessor's seats apart), whose sessions live
/// `session_ttl_s` past their last renewal (the governor keeps a silent proxy's seats
/// that long).
pub fn encode_report(
    proxy: &str,
    incarnation: &str,
    session_ttl_s: u32,
    hunts: &[HuntReport],
) -> Vec<u8> {
    let mut lines = Map::new();
    for line in hunts {
        let mut entry = json!({"active": line.active, "rejected": line.rejected});
        if let (Some(share), Some(fields)) = (line.share, entry.as_object_mut()) {
            fields.insert("share".to_string(), json!(share));
        }
        lines.insert(line.hunt.clone(), entry);
    }
    json!({
        "proxy": proxy,
        "incarnation": incarnation,
        "session_ttl_s": session_ttl_s,
        "hunts": Value::Object(lines),
    })
    .to_string()
    .into_bytes()
}
