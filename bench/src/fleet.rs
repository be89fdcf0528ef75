//! The fleet-lease items of `make bench` (issue 10), also run alone by
//! `huntgate-bench fleet`: the governor under 1,000 proxies × 100 hunts of lease
//! reports ([`crate::leases`]), burst → raised share in force ([`crate::burst`]),
//! and the instructions of a join admitted under a lease vs today's join
//! ([`crate::instr`] with a [`LeaseSetup`]).
// Reading results by key: `serde_json::Value`'s `Index` by key returns `Null` for
// a missing key or a non-object, it never panics.
#![allow(clippy::indexing_slicing)]

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use serde_json::{json, Value};

use crate::burst;
use crate::control::{Governor, Policies};
use crate::filters::{Feed, Filters, LeaseFeed};
use crate::instr::{self, Case, LeaseSetup};
use crate::leases::{self, LeaseLoad};
use crate::report::{kilo, Goal};
use crate::workload::{group, Scale, Traffic};

/// A join under a lease may cost at most this much more than today's join.
pub const JOIN_LEASE_MARGIN: f64 = 0.10;

/// The fleet items' settings.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    /// Simulated proxies reporting to the governor.
    pub proxies: u32,
    /// Governed hunts every proxy reports.
    pub hunts: u32,
    /// Governor sampling window.
    pub window: Duration,
    /// Bursts measured.
    pub burst_samples: u32,
    /// Both proxies' `poll_interval_ms` in the burst runs.
    pub burst_poll_ms: u32,
    /// Measured joins of the two cachegrind runs (multiples of `chunk`).
    pub n: (u32, u32),
    /// Joins per chunk under the lease.
    pub chunk: u32,
    /// `poll_interval_ms` of the Envoy under cachegrind.
    pub lease_poll_ms: u32,
    /// Runs per count (lowest total kept).
    pub repeats: u32,
}

/// Runs `f` as the bench step `name`: its time goes into `timings`, its error into the
/// result instead of stopping the bench.
pub fn step(name: &str, timings: &mut Vec<Value>, f: impl FnOnce() -> Result<Value>) -> Value {
    eprintln!("== {name}");
    let start = Instant::now();
    let value = f().unwrap_or_else(|e| {
        eprintln!("   {name} failed: {e:#}");
        json!({"error": format!("{e:#}")})
    });
    timings.push(json!({"step": name, "seconds": start.elapsed().as_secs()}));
    value
}

/// Runs the items named in `only` (comma-separated `governor,burst,join`; empty = all).
pub fn measure(
    root: &Path,
    dir: &Path,
    wasm: &Path,
    settings: &FleetSettings,
    only: &str,
    timings: &mut Vec<Value>,
) -> Value {
    let wanted = |item: &str| only.is_empty() || only.split(',').any(|o| o.trim() == item);
    let load = |proxies: u32| LeaseLoad {
        proxies,
        hunts: settings.hunts,
        limit: 50_000,
        warm_up: Duration::from_secs(8),
        window: settings.window,
    };
    let (governor, governor_small) = if wanted("governor") {
        // And a tenth of the proxies: the allocator's cost per report grows with them.
        (
            step("fleet: governor under lease reports", timings, || {
                leases::governor_under_leases(root, dir, load(settings.proxies))
            }),
            step(
                "fleet: governor under lease reports, 1/10 proxies",
                timings,
                || leases::governor_under_leases(root, dir, load((settings.proxies / 10).max(1))),
            ),
        )
    } else {
        (Value::Null, Value::Null)
    };
    let burst = if wanted("burst") {
        step("fleet: burst → raised share", timings, || {
            burst::burst_to_raise(
                root,
                dir,
                wasm,
                settings.burst_poll_ms,
                settings.burst_samples,
            )
        })
    } else {
        Value::Null
    };
    let join = if wanted("join") {
        step("fleet: join instructions under a lease", timings, || {
            join_instructions(root, dir, wasm, settings)
        })
    } else {
        Value::Null
    };
    json!({"governor": governor, "governor_small": governor_small, "burst": burst, "join": join})
}

/// Today's join (standalone) and a join admitted under a lease, same counts.
fn join_instructions(
    root: &Path,
    dir: &Path,
    wasm: &Path,
    settings: &FleetSettings,
) -> Result<Value> {
    let policies = Policies::new(
        dir.join("policies-join-lease"),
        "eval_period_s: 1\nsignals: []\ngovern_unlisted: false\n",
    )?;
    policies.set_hunt("h0", "max_hunters: 10000000\npin_ratio: 1.0\n")?;
    let governor = Governor::start(
        root,
        policies.path(),
        &dir.join("governor-join-lease.log"),
        None,
    )?;
    let scale = Scale {
        hunts: 1,
        active_hunts: 1,
        hunters: 10,
    };
    let huntgate = |feed: Option<Feed>| Filters::Huntgate {
        wasm: wasm.to_path_buf(),
        max_hunters: 10_000_000,
        max_tracked_hunts: 1024,
        listed_hunts: 0,
        feed,
    };
    let cases = [
        Case {
            id: "join-admit".into(),
            filters: huntgate(None),
            traffic: Some(Traffic::JoinAdmit),
            scale,
            lease: None,
        },
        Case {
            id: "join-admit-leases".into(),
            filters: huntgate(Some(Feed {
                poll_interval_ms: settings.lease_poll_ms,
                long_poll_s: 0,
                leases: Some(LeaseFeed {
                    proxy_id: String::new(),
                }),
            })),
            traffic: Some(Traffic::JoinAdmit),
            scale,
            lease: Some(LeaseSetup {
                governor_port: governor.port,
                chunk: settings.chunk,
                prime: settings.chunk + 50,
            }),
        },
    ];
    let bare = instr::measure(
        root,
        dir,
        &Case {
            id: "bare-fleet".into(),
            filters: Filters::Bare,
            // Sent the joins' requests (`Traffic::own_baseline`).
            traffic: Traffic::JoinAdmit.baseline_traffic(),
            scale,
            lease: None,
        },
        settings.n.0,
        settings.n.1,
        settings.repeats,
    )?
    .per_request;
    let mut values = Vec::new();
    let mut per = Vec::new();
    for case in &cases {
        let result = instr::measure(
            root,
            dir,
            case,
            settings.n.0,
            settings.n.1,
            settings.repeats,
        )?;
        per.push(result.per_request);
        values.push(result.to_json(Some(bare)));
    }
    drop(governor);
    let (today, leased) = match per.as_slice() {
        [today, leased] => (*today, *leased),
        _ => return Err(anyhow!("missing case")),
    };
    let (today_added, leased_added) = (today - bare, leased - bare);
    Ok(json!({
        "requests": [settings.n.0, settings.n.1],
        "chunk": settings.chunk,
        "lease_poll_interval_ms": settings.lease_poll_ms,
        "bare_per_request": bare.round(),
        "cases": values,
        "leases_vs_today_total": ((leased / today - 1.0) * 1000.0).round() / 1000.0,
        "leases_vs_today_added": ((leased_added / today_added - 1.0) * 1000.0).round() / 1000.0,
    }))
}

/// The fleet goals (none when the items were not run).
pub fn goals(fleet: &Value) -> Vec<Goal> {
    let mut goals = Vec::new();
    if fleet.is_null() {
        return goals;
    }
    let join = &fleet["join"];
    let added = |id: &str| {
        join["cases"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["id"] == id))
            .and_then(|c| c["added_vs_bare"].as_f64())
    };
    let (today, leased) = (added("join-admit"), added("join-admit-leases"));
    goals.push(Goal {
        what: "join admitted, leases on vs today's join (added instr)".into(),
        target: format!("≤ +{:.0} %", JOIN_LEASE_MARGIN * 100.0),
        measured: match (today, leased) {
            (Some(t), Some(l)) => format!(
                "{} vs {} ({:+.1} %)",
                kilo(l),
                kilo(t),
                (l / t - 1.0) * 100.0
            ),
            _ => "not measured".into(),
        },
        met: today
            .zip(leased)
            .map(|(t, l)| l <= t * (1.0 + JOIN_LEASE_MARGIN)),
    });
    let g = &fleet["governor"];
    if let Some(rate) = g["answered_reports_per_s"].as_f64() {
        goals.push(Goal {
            what: format!(
                "governor answers {} proxies × {} hunts every 1 s",
                g["proxies"], g["hunts"]
            ),
            target: format!("{} reports/s", g["offered_reports_per_s"]),
            measured: format!(
                "{rate:.0}/s, {} % CPU, {} MiB",
                g["cpu_percent"], g["rss_mib"]
            ),
            met: g["kept_up"].as_bool(),
        });
    }
    let b = &fleet["burst"]["first_rejection_to_admission"];
    if let (Some(p50), Some(p99)) = (b["p50_ms"].as_f64(), b["p99_ms"].as_f64()) {
        goals.push(Goal {
            what: format!(
                "burst → raised share in force (poll {} ms)",
                fleet["burst"]["poll_interval_ms"]
            ),
            target: "no goal set".into(),
            measured: format!("p50 {p50:.0} ms, p99 {p99:.0} ms"),
            met: None,
        });
    }
    goals
}

/// Text and Markdown lines of the fleet items.
pub fn render(fleet: &Value, text: &mut String, md: &mut String) {
    if fleet.is_null() {
        return;
    }
    let _ = writeln!(text, "\nFleet leases (issue 10)");
    for key in ["governor", "governor_small"] {
        let g = &fleet[key];
        if !g["cpu_percent"].is_null() {
            let l = &g["answer_latency"];
            let line = format!(
                "Governor, {} simulated proxies × {} governed hunts, POST /v1/leases every 1 s: answered {}/s of {} offered ({} failed), {} % CPU, {} MiB RSS (idle {} % / {} MiB); answer latency p50 {} ms, p99 {} ms, max {} ms",
                g["proxies"], g["hunts"], g["answered_reports_per_s"], g["offered_reports_per_s"], g["failed"],
                g["cpu_percent"], g["rss_mib"], g["idle"]["cpu_percent"], g["idle"]["rss_mib"],
                l["p50_ms"], l["p99_ms"], l["max_ms"]
            );
            let _ = writeln!(text, "{line}");
            let _ = writeln!(md, "{line}.\n");
        } else if let Some(e) = g["error"].as_str() {
            let _ = writeln!(text, "Governor under lease reports: failed: {e}");
        }
    }
    let b = &fleet["burst"];
    let s = &b["first_rejection_to_admission"];
    if !s.is_null() {
        let line = format!(
            "Burst on one of 2 proxies (limit {}, quiet proxy holding {}, poll {} ms): first rejected join → joins admitted again: n={} p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
            b["limit"], b["quiet_sessions"], b["poll_interval_ms"], s["n"], s["p50_ms"], s["p90_ms"], s["p99_ms"], s["max_ms"]
        );
        let _ = writeln!(text, "{line}");
        let _ = writeln!(md, "{line}.\n");
    } else if let Some(e) = b["error"].as_str() {
        let _ = writeln!(text, "Burst → raised share: failed: {e}");
    }
    let j = &fleet["join"];
    if let Some(cases) = j["cases"].as_array() {
        let _ = writeln!(
            md,
            "| join, 1 hunt × 10 hunters, {} → {} requests | instructions / request | added vs bare |\n|---|---:|---:|",
            j["requests"][0], j["requests"][1]
        );
        for c in cases {
            let label = if c["id"] == "join-admit-leases" {
                "join admitted, leases on (chunks under a lease)"
            } else {
                "join admitted, standalone (today)"
            };
            let per = group(c["instructions_per_request"].as_f64().unwrap_or(0.0) as u32);
            let added = c["added_vs_bare"].as_f64().unwrap_or(0.0).round() as i64;
            let _ = writeln!(text, "{label:<50} {per:>10} {added:>+10}");
            let _ = writeln!(md, "| {label} | {per} | {added:+} |");
        }
        let _ = writeln!(md);
    } else if let Some(e) = j["error"].as_str() {
        let _ = writeln!(text, "Join under a lease: failed: {e}");
    }
}
