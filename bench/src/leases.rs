//! Governor under the lease exchange: 1,000 simulated proxies × 100 governed hunts,
//! each proxy posting its report (`POST /v1/leases`) once a second on its own
//! keep-alive connection and acknowledging the shares it was answered. Measures the
//! governor's CPU and RSS (the sampling of [`crate::pollers::sample`]), the reports
//! it answered per second and the answer latency seen by the proxies.
//!
//! The allocator recomputes a hunt's max-min fair targets over every proxy of the
//! hunt at each report (O(proxies) per hunt per report), so the offered 1,000
//! reports/s may not all be answered: the rate it sustains is reported as measured.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Map, Value};

use crate::control::{summary, Governor, Policies};
use crate::http::{self, Connection};
use crate::pollers::sample;
use crate::process::Checked as _;

/// What the load looks like.
#[derive(Debug, Clone, Copy)]
pub struct LeaseLoad {
    /// Simulated proxies (one thread and one connection each).
    pub proxies: u32,
    /// Governed hunts, all reported by every proxy.
    pub hunts: u32,
    /// Fleet limit of each hunt (`max_hunters`, `pin_ratio: 1.0`).
    pub limit: u32,
    /// Time before sampling: the governor's learning period (5.5 s) must be over.
    pub warm_up: Duration,
    /// Sampling window.
    pub window: Duration,
}

/// Counters shared by the proxy threads.
#[derive(Default)]
struct Tally {
    answered: AtomicU64,
    failed: AtomicU64,
    /// Answers whose shares summed to more than zero (the hunts really are leased).
    granted: AtomicU64,
    /// Reports sent later than their 1 s schedule (the proxy waited on the previous answer).
    late: AtomicU64,
    /// The first failure, as text.
    first_failure: std::sync::Mutex<Option<String>>,
}

impl Tally {
    fn fail(&self, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_failure.lock() {
            first.get_or_insert(why);
        }
    }
}

/// The report of proxy `id`: per hunt a few sessions (0–19, varying by proxy and
/// hunt), a little unmet demand on one hunt in seven, and the share last answered.
fn report(id: u32, hunts: u32, shares: &[Option<u64>]) -> Vec<u8> {
    let mut lines = Map::new();
    for k in 0..hunts {
        let mix = id.wrapping_add(k.wrapping_mul(7));
        let mut line = json!({"active": mix % 20, "rejected": if mix % 7 == 0 { 2 } else { 0 }});
        if let (Some(Some(share)), Some(fields)) = (shares.get(k as usize), line.as_object_mut()) {
            fields.insert("share".to_string(), json!(share));
        }
        lines.insert(format!("h{k}"), line);
    }
    json!({"proxy": format!("sim-{id:04}"), "hunts": Value::Object(lines)})
        .to_string()
        .into_bytes()
}

/// One simulated proxy: a report every second (first one at `offset`), on one
/// keep-alive connection; returns the answer latencies (µs) measured while
/// `recording` was set.
fn proxy(
    port: u16,
    id: u32,
    hunts: u32,
    offset: Duration,
    stop: &AtomicBool,
    recording: &AtomicBool,
    tally: &Tally,
) -> Vec<u32> {
    let mut latencies = Vec::new();
    let mut shares: Vec<Option<u64>> = vec![None; hunts as usize];
    let mut connection: Option<Connection> = None;
    let mut next = Instant::now() + offset;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if let Some(wait) = next.checked_duration_since(now) {
            thread::sleep(wait);
        } else if now.duration_since(next) > Duration::from_millis(100) {
            tally.late.fetch_add(1, Ordering::Relaxed);
            // Behind schedule: send now, and count the next second from here (no catch-up burst).
            next = now;
        }
        next += Duration::from_secs(1);
        let request = http::post_json("/v1/leases", &report(id, hunts, &shares));
        let sent = Instant::now();
        let outcome = match connection.as_mut() {
            Some(c) => c.round_trip(&request),
            None => Connection::open(port, Duration::from_secs(30)).and_then(|mut c| {
                let r = c.round_trip(&request);
                connection = Some(c);
                r
            }),
        };
        let elapsed = sent.elapsed();
        match outcome {
            Ok(response) if response.status == 200 => {
                let answer: Value = serde_json::from_str(&response.body).unwrap_or(Value::Null);
                let leased = answer.get("leases").and_then(|l| l.get("hunts"));
                let mut total = 0;
                for (k, share) in shares.iter_mut().enumerate() {
                    *share = leased
                        .and_then(|h| h.get(format!("h{k}")))
                        .and_then(|h| h.get("share"))
                        .and_then(Value::as_u64);
                    total += share.unwrap_or(0);
                }
                if total > 0 {
                    tally.granted.fetch_add(1, Ordering::Relaxed);
                }
                tally.answered.fetch_add(1, Ordering::Relaxed);
                if recording.load(Ordering::Relaxed) {
                    latencies.push(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX));
                }
            }
            Ok(response) => {
                tally.fail(format!("status {}: {}", response.status, response.body));
                connection = None;
            }
            Err(e) => {
                tally.fail(format!("{e:#}"));
                connection = None;
            }
        }
    }
    latencies
}

/// The governor with `load.hunts` governed hunts under `load.proxies` simulated proxies.
// `Value`'s `Index` by key returns `Null` for a missing key, it never panics.
#[allow(clippy::indexing_slicing)]
pub fn governor_under_leases(root: &Path, dir: &Path, load: LeaseLoad) -> Result<Value> {
    let policies = Policies::new(
        dir.join("policies-leases"),
        "eval_period_s: 5\nsignals: []\ngovern_unlisted: false\n",
    )?;
    for k in 0..load.hunts {
        policies.set_hunt(
            &format!("h{k}"),
            &format!("max_hunters: {}\npin_ratio: 1.0\n", load.limit),
        )?;
    }
    // One connection per proxy (the default cap is 512).
    let connections = (load.proxies + 64).to_string();
    let mut governor = Governor::start_with(
        root,
        policies.path(),
        &dir.join(format!("governor-leases-{}.log", load.proxies)),
        None,
        &["--max-connections", &connections],
    )?;
    let pid = governor.child.id();
    // Every hunt file loaded: the document governs them all.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let document = http::get_once(governor.port, "/v1/throttle", &[])?;
        let body: Value = serde_json::from_str(&document.body).unwrap_or(Value::Null);
        let governed = body
            .get("hunts")
            .and_then(Value::as_object)
            .map_or(0, |h| h.len());
        if governed >= load.hunts as usize {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "the governor governs {governed} of {} hunts after 30 s",
                load.hunts
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
    let (idle_cpu, idle_rss) = sample(pid, Duration::from_secs(2))?;

    let stop = Arc::new(AtomicBool::new(false));
    let recording = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut handles = Vec::new();
    for id in 0..load.proxies {
        let (stop, recording, tally) = (stop.clone(), recording.clone(), tally.clone());
        let offset = Duration::from_secs(1) * id / load.proxies.max(1);
        let (port, hunts) = (governor.port, load.hunts);
        let handle = thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || proxy(port, id, hunts, offset, &stop, &recording, &tally))
            .context("spawn proxy thread")?;
        handles.push(handle);
    }
    thread::sleep(load.warm_up);
    let (answered0, failed0, late0) = (
        tally.answered.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
        tally.late.load(Ordering::Relaxed),
    );
    recording.store(true, Ordering::Relaxed);
    let (cpu, rss) = sample(pid, load.window)?;
    recording.store(false, Ordering::Relaxed);
    let answered = tally.answered.load(Ordering::Relaxed) - answered0;
    let failed = tally.failed.load(Ordering::Relaxed) - failed0;
    let late = tally.late.load(Ordering::Relaxed) - late0;
    let granted = tally.granted.load(Ordering::Relaxed);
    let fleet = http::get_once(governor.port, "/v1/fleet", &[])?;
    let fleet: Value = serde_json::from_str(&fleet.body).unwrap_or(Value::Null);
    let view = &fleet["hunts"]["h0"];
    let h0 = json!({
        "limit": view["limit"],
        "granted": view["granted"],
        "committed": view["committed"],
        "active": view["active"],
        "holders": view["holders"],
        "proxies_known": view["proxies_known"],
        "learning": view["learning"],
    });
    stop.store(true, Ordering::Relaxed);
    let mut latencies_ms = Vec::new();
    for handle in handles {
        if let Ok(samples) = handle.join() {
            latencies_ms.extend(samples.iter().map(|us| f64::from(*us) / 1000.0));
        }
    }
    governor.child.stop_checked(Duration::from_secs(30))?;
    let offered = f64::from(load.proxies);
    let rate = answered as f64 / load.window.as_secs_f64();
    let mut latency = summary(&latencies_ms);
    // Sub-millisecond answers: keep a decimal.
    let mut sorted = latencies_ms.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| {
        sorted
            .get(((sorted.len().max(1) - 1) as f64 * q).round() as usize)
            .map_or(f64::NAN, |v| (v * 10.0).round() / 10.0)
    };
    if let Some(fields) = latency.as_object_mut() {
        fields.remove("samples_ms");
        fields.insert("p50_ms".into(), json!(pick(0.5)));
        fields.insert("p90_ms".into(), json!(pick(0.9)));
        fields.insert("p99_ms".into(), json!(pick(0.99)));
    }
    Ok(json!({
        "binary": crate::control::governor_binary(root)?.display().to_string(),
        "proxies": load.proxies,
        "hunts": load.hunts,
        "limit_per_hunt": load.limit,
        "offered_reports_per_s": offered,
        "answered_reports_per_s": rate.round(),
        "kept_up": rate >= offered * 0.95,
        "failed": failed,
        "first_failure": tally.first_failure.lock().ok().and_then(|f| f.clone()),
        "late_reports": late,
        "answers_with_shares": granted,
        "idle": {
            "cpu_percent": (idle_cpu * 10.0).round() / 10.0,
            "rss_mib": (idle_rss as f64 / 1048576.0 * 10.0).round() / 10.0,
        },
        "cpu_percent": (cpu * 10.0).round() / 10.0,
        "rss_mib": (rss as f64 / 1048576.0 * 10.0).round() / 10.0,
        "answer_latency": latency,
        "fleet_h0": h0,
    }))
}
