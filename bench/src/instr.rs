//! The instruction-count harness: Envoy (`--concurrency 1`) under cachegrind,
//! one keep-alive connection, per-request instructions as the slope between two
//! request counts so start-up, V8 warm-up and the prefill cancel out.
//!
//! Envoy and the filter also run timers (stats flush, the filter's 1 s tick), whose
//! cost grows with wall time, not requests; the shorter run is therefore padded
//! with idle time to last as long as the longer one, so timers cancel too.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::{json, Value};

use crate::envoy::{Envoy, EnvoySpec};
use crate::filters::Filters;
use crate::http::Connection;
use crate::workload::{Requests, Scale, Traffic};

/// One measured variant.
#[derive(Debug, Clone)]
pub struct Case {
    /// Unique id (file names, JSON).
    pub id: String,
    /// Filters in front of the router.
    pub filters: Filters,
    /// huntgate traffic; `None` sends hot-path-shaped requests to a non-huntgate chain.
    pub traffic: Option<Traffic>,
    /// State size.
    pub scale: Scale,
}

/// One variant's figures.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The case.
    pub case: Case,
    /// Request counts of the two runs.
    pub counts: (u32, u32),
    /// Total instructions of the two runs.
    pub totals: (u64, u64),
    /// Instructions per request (the slope).
    pub per_request: f64,
    /// Wall time of the longer run's measured phase, seconds.
    pub measured_s: f64,
}

impl CaseResult {
    /// JSON form.
    pub fn to_json(&self, bare: Option<f64>) -> Value {
        json!({
            "id": self.case.id,
            "filters": self.case.filters.label(),
            "traffic": self.case.traffic.map(|t| t.label()),
            "hunts": self.case.scale.hunts,
            "active_hunts": self.case.scale.active_hunts,
            "hunters_per_hunt": self.case.scale.hunters,
            "requests": [self.counts.0, self.counts.1],
            "instructions_total": [self.totals.0, self.totals.1],
            "instructions_per_request": self.per_request.round(),
            "added_vs_bare": bare.map(|b| (self.per_request - b).round()),
        })
    }
}

/// Total instructions from a cachegrind output file (its `summary:` line).
pub fn cachegrind_total(path: &Path) -> Result<u64> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .find_map(|line| line.strip_prefix("summary:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow!("no summary line in {}", path.display()))
}

/// Stat names whose counters must have moved by the measured requests.
fn expected_counter(traffic: Traffic) -> Option<&'static str> {
    match traffic {
        Traffic::Hot => Some("wasmcustom.huntgate_session"),
        Traffic::JoinAdmit => Some("wasmcustom.huntgate_admitted"),
        Traffic::JoinReject => Some("wasmcustom.huntgate_rejected"),
        Traffic::NonHunt => None,
    }
}

/// One Envoy run under cachegrind with `n` measured requests, padded to `pad`.
/// Returns total instructions and the measured phase's wall time.
fn run_once(
    root: &Path,
    dir: &Path,
    case: &Case,
    n: u32,
    pad: Option<Duration>,
) -> Result<(u64, Duration)> {
    let name = format!("{}-{n}", case.id);
    let out: PathBuf = dir.join(format!("{name}.cachegrind"));
    let spec = EnvoySpec {
        filters: case.filters.clone(),
        workers: 1,
        governor_port: None,
        cachegrind_out: Some(out.clone()),
    };
    let requests = Requests::new(case.scale)?;
    let envoy = Envoy::start(root, dir, &name, &spec, Duration::from_secs(600))?;
    envoy.settle(Duration::from_secs(60))?;
    let mut connection = Connection::open(envoy.port, Duration::from_secs(120))?;
    if case.traffic.is_some() {
        requests.prefill(&mut connection)?;
    }
    let (expected_status, batch): (u16, Vec<Vec<u8>>) = match case.traffic {
        Some(traffic) => (
            traffic.expected_status(),
            (0..n).map(|i| requests.measured(traffic, i)).collect(),
        ),
        None => (200, (0..n).map(|i| requests.hot_shaped(i)).collect()),
    };
    let start = Instant::now();
    for (i, request) in batch.iter().enumerate() {
        let response = connection.round_trip(request)?;
        if response.status != expected_status {
            bail!(
                "{name}: request {i} got {} (expected {expected_status}): {}",
                response.status,
                response.body
            );
        }
    }
    let measured = start.elapsed();
    if let Some(pad) = pad {
        if let Some(rest) = pad.checked_sub(measured) {
            thread::sleep(rest);
        }
    }
    drop(connection);
    // Idle until background compilation is done, and past a tick (the filter
    // adds hot-path requests to its counter on its tick).
    thread::sleep(Duration::from_millis(1500));
    envoy.settle(Duration::from_secs(60))?;
    let checks = std::env::var_os("BENCH_SKIP_CHECKS").is_none();
    if let Some(counter) = case.traffic.and_then(expected_counter).filter(|_| checks) {
        let value = envoy.stat(counter)?;
        let prefilled = if case.traffic == Some(Traffic::JoinAdmit) {
            u64::from(case.scale.active_hunts) * u64::from(case.scale.hunters)
        } else {
            0
        };
        if value != u64::from(n) + prefilled {
            let stats = envoy.admin("/stats")?;
            let ours: Vec<&str> = stats.lines().filter(|l| l.contains("huntgate_")).collect();
            bail!(
                "{name}: {counter} = {value}, expected {}; stats: {}",
                u64::from(n) + prefilled,
                ours.join(", ")
            );
        }
    }
    envoy.stop()?;
    Ok((cachegrind_total(&out)?, measured))
}

/// Measures `case` as the slope between `n1` and `n2` requests. With `repeats`
/// above 1 each count is run that many times and the lowest total kept: the
/// rare disturbances (a V8 tier-up or GC landing in one run) only ever add.
pub fn measure(
    root: &Path,
    dir: &Path,
    case: &Case,
    n1: u32,
    n2: u32,
    repeats: u32,
) -> Result<CaseResult> {
    let report = |e: anyhow::Error| {
        eprintln!("  {:<34} failed: {e:#}", case.id);
        e
    };
    let mut best: Option<(u64, u64, Duration)> = None;
    for _ in 0..repeats.max(1) {
        let (i2, d2) = run_once(root, dir, case, n2, None).map_err(report)?;
        let (i1, _) = run_once(root, dir, case, n1, Some(d2)).map_err(report)?;
        best = Some(match best {
            None => (i1, i2, d2),
            Some((b1, b2, bd)) => (b1.min(i1), b2.min(i2), bd.max(d2)),
        });
    }
    let (i1, i2, d2) = best.ok_or_else(|| anyhow!("no run"))?;
    let per_request = (i2 as f64 - i1 as f64) / f64::from(n2 - n1);
    eprintln!(
        "  {:<34} {:>12.0} instr/request ({} → {} requests, {:.1} s)",
        case.id,
        per_request,
        n1,
        n2,
        d2.as_secs_f64()
    );
    Ok(CaseResult {
        case: case.clone(),
        counts: (n1, n2),
        totals: (i1, i2),
        per_request,
        measured_s: d2.as_secs_f64(),
    })
}

/// Measures every case, `jobs` at a time, in order of `cases`; a failed case is
/// reported as its error, the others still run.
pub fn measure_all(
    root: &Path,
    dir: &Path,
    cases: &[Case],
    n1: u32,
    n2: u32,
    repeats: u32,
    jobs: usize,
) -> Result<Vec<Result<CaseResult>>> {
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<Result<CaseResult>>>> =
        cases.iter().map(|_| Mutex::new(None)).collect();
    thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(case) = cases.get(i) else { break };
                let result = measure(root, dir, case, n1, n2, repeats);
                if let Some(slot) = results.get(i) {
                    if let Ok(mut slot) = slot.lock() {
                        *slot = Some(result);
                    }
                }
            });
        }
    });
    Ok(results
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .map_err(|_| anyhow!("a measuring thread panicked"))
                .and_then(|r| r.ok_or_else(|| anyhow!("a case was not measured")))
                .and_then(|r| r)
        })
        .collect())
}
