//! The governor's throttle/lease document as the filter parses it
//! (`ThrottleTable::decode`, lease grants included), its path through shared
//! data (`throttle::publish_exchange` → `ThrottleCache::refresh`), and the
//! lease report the filter sends back (`lease::encode_report`).
//!
//! Checks, for an arbitrary document:
//! - decoding never panics, and refuses anything over `MAX_THROTTLE_BYTES`;
//! - whatever decodes is within bounds: ratios finite in [0, 1], hunt ids
//!   canonical, `max_hunters` and shares at most `MAX_HUNTERS_LIMIT`, a lease
//!   of 1 ms to `MAX_LEASE_MS`; every limit derived from it is at most its max_hunters;
//! - decode is a fixed point: the decoded table written back as JSON decodes to itself;
//! - published through shared data, every worker's cache holds that same table,
//!   the feed metadata (sequence, fetch and send times) reads back as written,
//!   and a live share is exactly the granted one, a lapsed lease none;
//! - a refused document leaves the cache on the last good one with the error set;
//! - the lease report over the decoded hunts is JSON naming exactly them;
//! - a lease answer's `ends` (`FleetEnds::decode_answer`) never panic, and what
//!   decodes is bounded (a cursor of 1-128 visible ASCII, at most
//!   `MAX_ANSWERED_ENDS` ends, none with the learnt-end bit) and goes back in
//!   the report as 16-hex-digit keys.
#![no_main]

use huntgate_core::config::{HuntSettings, Mode, MAX_HUNTERS_LIMIT};
use huntgate_core::hunt_id::normalize_hunt_id;
use huntgate_core::lease::{
    encode_report, EndsReport, FleetEnds, HuntReport, MAX_ANSWERED_ENDS, MAX_CURSOR_LEN,
};
use huntgate_core::shared_data::{MemorySharedData, SharedData};
use huntgate_core::store::prepare_layout;
use huntgate_core::store::FLEET_END;
use huntgate_core::throttle::{
    effective_limit, publish_exchange, ThrottleCache, ThrottleTable, MAX_LEASE_MS,
    MAX_THROTTLE_BYTES, THROTTLE_KEY,
};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};

/// The table as a governor would serve it.
fn to_json(table: &ThrottleTable) -> Vec<u8> {
    let hunts: Map<String, Value> = table
        .hunts
        .iter()
        .map(|(hunt, entry)| {
            let mut e = json!({"ratio": entry.ratio});
            if let (Some(m), Some(fields)) = (entry.max_hunters, e.as_object_mut()) {
                fields.insert("max_hunters".to_string(), json!(m));
            }
            (hunt.clone(), e)
        })
        .collect();
    let mut doc = json!({
        "version": table.version,
        "default_ratio": table.default_ratio,
        "hunts": hunts,
    });
    if let Some(fields) = doc.as_object_mut() {
        if let Some(ttl) = table.ttl_s {
            fields.insert("ttl_s".to_string(), json!(ttl));
        }
        if let Some(grant) = &table.leases {
            let shares: Map<String, Value> = grant
                .hunts
                .iter()
                .map(|(hunt, share)| (hunt.clone(), json!({"share": share.share})))
                .collect();
            fields.insert(
                "leases".to_string(),
                json!({"lease_ms": grant.lease_ms, "hunts": shares}),
            );
        }
    }
    doc.to_string().into_bytes()
}

/// Equal but for the last bits of the ratios (serde_json's default float parsing
/// may be one ulp off its own shortest printing).
fn same(a: &ThrottleTable, b: &ThrottleTable) -> bool {
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-12;
    a.version == b.version
        && a.ttl_s == b.ttl_s
        && close(a.default_ratio, b.default_ratio)
        && a.leases == b.leases
        && a.hunts.len() == b.hunts.len()
        && a.hunts.iter().all(|(hunt, x)| {
            b.hunts
                .get(hunt)
                .is_some_and(|y| close(x.ratio, y.ratio) && x.max_hunters == y.max_hunters)
        })
}

fuzz_target!(|data: &[u8]| {
    // The first 8 bytes pick the clock (when long enough), the rest is the document.
    let (clock, document) = match data.split_first_chunk::<8>() {
        Some((clock, rest)) if rest.first() == Some(&b'{') => (u64::from_le_bytes(*clock), rest),
        _ => (1_700_000_000_000, data),
    };
    let now_ms = clock % (1 << 50);
    let ends = FleetEnds::decode_answer(document);
    if let Ok(Some(ends)) = &ends {
        assert!((1..=MAX_CURSOR_LEN).contains(&ends.cursor.len()));
        assert!(ends.cursor.bytes().all(|b| b.is_ascii_graphic()));
        assert!(ends.sessions.len() <= MAX_ANSWERED_ENDS);
        assert!(ends.sessions.iter().all(|(_, at)| at & FLEET_END == 0));
    }
    let decoded = ThrottleTable::decode(document);
    if document.len() > MAX_THROTTLE_BYTES {
        assert!(decoded.is_err());
    }

    let shared = MemorySharedData::default();
    if prepare_layout(&shared, 1, 0).is_err() {
        panic!("layout on an empty store failed");
    }
    let mut cache = ThrottleCache::default();

    let table = match decoded {
        Ok(table) => table,
        Err(e) => {
            assert!(!e.is_empty());
            // Published anyway (a corrupt value in shared data): the cache keeps
            // its (default) table and says why.
            let _ = publish_exchange(&shared, document, now_ms, now_ms);
            let _ = cache.refresh(&shared);
            assert_eq!(*cache.table(), ThrottleTable::default());
            assert!(cache.last_error.is_some());
            return;
        }
    };

    // Bounds.
    let valid = |r: f64| r.is_finite() && (0.0..=1.0).contains(&r);
    assert!(valid(table.default_ratio));
    let settings = HuntSettings {
        max_hunters: 2000,
        mode: Mode::Enforce,
    };
    assert!(table.limit("unlisted-hunt", &settings) <= settings.max_hunters);
    for (hunt, entry) in &table.hunts {
        assert_eq!(normalize_hunt_id(hunt).as_ref(), Ok(hunt));
        assert!(valid(entry.ratio));
        assert!(entry.max_hunters.is_none_or(|m| m <= MAX_HUNTERS_LIMIT));
        let max = entry.max_hunters.unwrap_or(settings.max_hunters);
        assert!(table.limit(hunt, &settings) <= max);
        assert_eq!(
            table.limit(hunt, &settings),
            effective_limit(max, entry.ratio)
        );
    }
    if let Some(grant) = &table.leases {
        assert!((1..=MAX_LEASE_MS).contains(&grant.lease_ms));
        for (hunt, share) in &grant.hunts {
            assert_eq!(normalize_hunt_id(hunt).as_ref(), Ok(hunt));
            assert!(share.share <= MAX_HUNTERS_LIMIT);
        }
    }

    // Fixed point.
    let written = to_json(&table);
    match ThrottleTable::decode(&written) {
        Ok(again) => assert!(same(&table, &again), "{table:?} -> {again:?}"),
        Err(e) => panic!("decoded table written back refused: {e}"),
    }

    // Through shared data: sent at now, received 5 ms later.
    let sent_ms = now_ms;
    if let Err(e) = publish_exchange(&shared, document, sent_ms + 5, sent_ms) {
        panic!("publish failed: {e}");
    }
    match shared.get(THROTTLE_KEY) {
        Ok(Some((stored, _))) => assert_eq!(stored, document),
        other => panic!("document not stored: {other:?}"),
    }
    if let Err(e) = cache.refresh(&shared) {
        panic!("refresh failed: {e}");
    }
    assert_eq!(*cache.table(), table);
    assert!(cache.last_error.is_none());
    assert_eq!(cache.age_ms(sent_ms + 5), Some(0));
    assert_eq!(cache.age_ms(sent_ms + 1005), Some(1000));
    if let Some(grant) = &table.leases {
        assert_eq!(cache.lease_age_ms(sent_ms + 7), Some(7));
        let lapsed = sent_ms + u64::from(grant.lease_ms);
        for (hunt, share) in &grant.hunts {
            assert_eq!(cache.share(hunt, sent_ms), Some(share.share));
            assert_eq!(cache.share(hunt, lapsed - 1), Some(share.share));
            assert_eq!(cache.share(hunt, lapsed), None);
        }
    } else {
        assert_eq!(cache.lease_age_ms(sent_ms), None);
    }
    // A second worker's cache sees the same; a corrupt document after it is refused
    // and the good table stays.
    let mut other = ThrottleCache::default();
    let _ = other.refresh(&shared);
    assert_eq!(*other.table(), table);
    let _ = publish_exchange(
        &shared,
        b"{\"default_ratio\": 2}",
        sent_ms + 10,
        sent_ms + 10,
    );
    let _ = other.refresh(&shared);
    assert_eq!(*other.table(), table);
    assert!(other.last_error.is_some());

    // The lease report over these hunts.
    let lines: Vec<HuntReport> = table
        .hunts
        .iter()
        .zip(0u32..)
        .map(|((hunt, entry), i)| HuntReport {
            hunt: hunt.clone(),
            active: i,
            rejected: entry.max_hunters.unwrap_or(0),
            share: table
                .leases
                .as_ref()
                .and_then(|g| g.hunts.get(hunt))
                .map(|s| s.share),
        })
        .collect();
    let ends = match ends {
        Ok(Some(ends)) => EndsReport {
            ends: ends.sessions.into_iter().take(4096).collect(),
            after: Some(ends.cursor),
        },
        _ => EndsReport::default(),
    };
    let report = encode_report("proxy-1", "incarnation-1", 300, &lines, &ends);
    let parsed: Value =
        serde_json::from_slice(&report).unwrap_or_else(|e| panic!("report is not JSON: {e}"));
    let hunts = parsed.get("hunts").and_then(Value::as_object);
    let hunts = hunts.unwrap_or_else(|| panic!("report without hunts: {parsed}"));
    assert_eq!(hunts.len(), lines.len());
    for line in &lines {
        let entry = hunts.get(&line.hunt);
        let entry = entry.unwrap_or_else(|| panic!("{} missing from the report", line.hunt));
        assert_eq!(entry.get("active"), Some(&json!(line.active)));
        assert_eq!(entry.get("rejected"), Some(&json!(line.rejected)));
        assert_eq!(entry.get("share"), line.share.map(|s| json!(s)).as_ref());
    }
    let reported = parsed.get("ends").and_then(Value::as_array);
    assert_eq!(reported.map_or(0, Vec::len), ends.ends.len());
    for (pair, (key, at)) in reported.into_iter().flatten().zip(&ends.ends) {
        assert_eq!(pair, &json!([format!("{key:016x}"), at]));
    }
    assert_eq!(
        parsed.get("ends_after").and_then(Value::as_str),
        ends.after.as_deref()
    );
});
