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
    /// Joins under a lease from this governor (the filters' feed must have leases on).
    pub lease: Option<LeaseSetup>,
}

/// How a "join admitted, leases on" case gets and keeps a share large enough
/// for every measured join.
///
/// The allocator grants a proxy `active + demand + growth + headroom`, so a
/// share only covers what the previous exchange saw. Each run therefore first
/// rejects `prime` joins (demand, identical in both runs) and then sends its
/// measured joins in chunks of `chunk`, each right after an exchange and done
/// before the next one: the growth the next exchange sees is one chunk, and so
/// is the room it grants. A run in which an exchange lands inside a chunk is
/// discarded and run again.
#[derive(Debug, Clone, Copy)]
pub struct LeaseSetup {
    /// The governor's HTTP port (serving hunt `h0` with a large limit).
    pub governor_port: u16,
    /// Joins per chunk; the request counts must be multiples of it.
    pub chunk: u32,
    /// Rejected joins sent before the first chunk.
    pub prime: u32,
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
        Traffic::NonHunt | Traffic::NonHuntSkipped => None,
    }
}

/// [`run_once`], up to three times for a lease case (see [`LeaseSetup`]).
fn run(
    root: &Path,
    dir: &Path,
    case: &Case,
    n: u32,
    pad: Option<Duration>,
) -> Result<(u64, Duration)> {
    let attempts = if case.lease.is_some() { 3 } else { 1 };
    let mut last = None;
    for attempt in 0..attempts {
        match run_once(root, dir, case, n, pad) {
            Ok(done) => return Ok(done),
            Err(e) if attempt + 1 < attempts => {
                eprintln!("  {}-{n}: {e:#}; running it again", case.id);
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow!("no run")))
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
    let mut filters = case.filters.clone();
    // A fresh identity per run: the governor still holds the previous run's lease.
    let proxy_id = lease_proxy_id(&mut filters, &name);
    let spec = EnvoySpec {
        filters,
        workers: 1,
        governor_port: case.lease.map(|l| l.governor_port),
        upstream_port: None,
        cachegrind_out: Some(out.clone()),
    };
    let requests = Requests::new(case.scale)?;
    let envoy = Envoy::start(root, dir, &name, &spec, Duration::from_secs(600))?;
    envoy.settle(Duration::from_secs(60))?;
    let mut connection = Connection::open(envoy.port, Duration::from_secs(120))?;
    let leased = match (case.lease, &proxy_id) {
        (Some(setup), Some(proxy)) => Some(LeasedRun::prime(setup, proxy, &mut connection)?),
        _ => None,
    };
    if case.traffic.is_some() {
        requests.prefill(&mut connection)?;
    }
    if case.traffic == Some(Traffic::Hot) {
        requests.warm_hot(&mut connection)?;
    }
    let (expected_status, batch): (u16, Vec<Vec<u8>>) = match case.traffic {
        Some(traffic) => (
            traffic.expected_status(),
            (0..n).map(|i| requests.measured(traffic, i)).collect(),
        ),
        None => (200, (0..n).map(|i| requests.hot_shaped(i)).collect()),
    };
    let start = Instant::now();
    let chunk = case.lease.map_or(batch.len(), |l| l.chunk as usize).max(1);
    let mut leased = leased;
    for (c, requests) in batch.chunks(chunk).enumerate() {
        if let Some(run) = leased.as_mut() {
            run.before_chunk(chunk as u32)?;
        }
        for (i, request) in requests.iter().enumerate() {
            let response = connection.round_trip(request)?;
            if response.status != expected_status {
                bail!(
                    "{name}: request {} got {} (expected {expected_status}): {}",
                    c * chunk + i,
                    response.status,
                    response.body
                );
            }
        }
        if let Some(run) = leased.as_mut() {
            run.after_chunk()?;
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
    // adds what requests counted to its counters on its tick).
    thread::sleep(Duration::from_millis(1500));
    envoy.settle(Duration::from_secs(60))?;
    let checks = std::env::var_os("BENCH_SKIP_CHECKS").is_none();
    let filtered = !matches!(case.filters, Filters::Bare);
    let expected = case.traffic.and_then(expected_counter);
    if let Some(counter) = expected.filter(|_| checks && filtered) {
        let value = envoy.stat(counter)?;
        let prefilled = match case.traffic {
            Some(Traffic::JoinAdmit) => {
                u64::from(case.scale.active_hunts) * u64::from(case.scale.hunters)
                    + leased.as_ref().map_or(0, |l| u64::from(l.primed_admitted))
            }
            // The warming requests are sessions too.
            Some(Traffic::Hot) => u64::from(requests.hot_tickets()),
            _ => 0,
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
    if let Some(run) = &leased {
        eprintln!(
            "  {name}: {} chunks under a lease, share {} at the end",
            run.chunks, run.last_share
        );
    }
    envoy.stop()?;
    Ok((cachegrind_total(&out)?, measured))
}

/// Sets a per-run `proxy_id` when the filters exchange leases; returns it.
fn lease_proxy_id(filters: &mut Filters, name: &str) -> Option<String> {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let Filters::Huntgate {
        feed: Some(feed), ..
    } = filters
    else {
        return None;
    };
    let leases = feed.leases.as_mut()?;
    let run = RUNS.fetch_add(1, Ordering::SeqCst);
    leases.proxy_id = format!("{name}-{}-{run}", std::process::id());
    Some(leases.proxy_id.clone())
}

/// The governor's view of one proxy's lease on `h0`: (share, active, lease end).
// `Value`'s `Index` by key returns `Null` for a missing key, it never panics.
#[allow(clippy::indexing_slicing)]
fn lease_view(port: u16, proxy: &str) -> Result<Option<(u64, u64, u64)>> {
    let response = crate::http::get_once(port, "/v1/fleet", &[])?;
    let fleet: Value = serde_json::from_str(&response.body)?;
    let p = &fleet["hunts"]["h0"]["proxies"][proxy];
    Ok(p["share"]
        .as_u64()
        .and_then(|share| Some((share, p["active"].as_u64()?, p["lease_until_ms"].as_u64()?))))
}

/// A run's lease state, watched at the governor.
struct LeasedRun {
    port: u16,
    proxy: String,
    /// Lease end of the exchange the current chunk follows.
    lease_until: u64,
    /// Joins of the priming that were admitted (within the first share).
    primed_admitted: u32,
    chunks: u32,
    last_share: u64,
    /// The latest exchange granted the priming's room and no chunk used it yet.
    fresh: bool,
}

/// Room beyond the first chunk the priming must win: the prefilled hunters.
const PREFILL_ROOM: u64 = 10;

/// How long to wait for one exchange (poll intervals are at most a few seconds).
const EXCHANGE_WITHIN: Duration = Duration::from_secs(20);

impl LeasedRun {
    /// Waits for a live lease, then rejects `setup.prime` joins within one exchange period.
    fn prime(setup: LeaseSetup, proxy: &str, connection: &mut Connection) -> Result<Self> {
        let mut run = Self {
            port: setup.governor_port,
            proxy: proxy.to_string(),
            lease_until: 0,
            primed_admitted: 0,
            chunks: 0,
            last_share: 0,
            fresh: false,
        };
        // The first grant (after the governor's learning period), then a fresh exchange.
        run.next_exchange(|share, _| share > 0)?;
        run.next_exchange(|share, _| share > 0)?;
        for i in 0..setup.prime {
            let request = crate::http::get(
                "/hunts/h0/join",
                &[(crate::workload::HUNTER_HEADER, &format!("prime{i}"))],
            );
            match connection.round_trip(&request)?.status {
                200 => run.primed_admitted += 1,
                429 => {}
                other => bail!("priming join got {other}"),
            }
        }
        run.after_chunk()?;
        // The exchange that saw the demand: room for the prefill and the first chunk.
        let needed = u64::from(setup.chunk) + PREFILL_ROOM;
        run.next_exchange(|share, active| share >= active + needed)?;
        run.fresh = true;
        Ok(run)
    }

    /// Waits until the governor processed a report newer than the last one seen
    /// whose grant satisfies `ok(share, active)`.
    fn next_exchange(&mut self, ok: impl Fn(u64, u64) -> bool) -> Result<()> {
        let deadline = Instant::now() + EXCHANGE_WITHIN;
        loop {
            if let Some((share, active, until)) = lease_view(self.port, &self.proxy)? {
                if until != self.lease_until && ok(share, active) {
                    self.lease_until = until;
                    self.last_share = share;
                    // The answer reaches the proxy and is published within milliseconds.
                    thread::sleep(Duration::from_millis(200));
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "no exchange of {} granting enough within {EXCHANGE_WITHIN:?}",
                    self.proxy
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the exchange that grants room for `chunk` more joins (the first
    /// chunk uses the room the priming won).
    fn before_chunk(&mut self, chunk: u32) -> Result<()> {
        if self.fresh {
            self.fresh = false;
            self.after_chunk()?;
        } else {
            self.next_exchange(|share, active| share >= active + u64::from(chunk))?;
        }
        self.chunks += 1;
        Ok(())
    }

    /// Fails if an exchange landed while the chunk was sent.
    fn after_chunk(&mut self) -> Result<()> {
        let now = lease_view(self.port, &self.proxy)?.map(|(_, _, until)| until);
        if now != Some(self.lease_until) {
            bail!("an exchange landed inside a chunk (make the chunk smaller or the poll interval longer)");
        }
        Ok(())
    }
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
        let (i2, d2) = run(root, dir, case, n2, None).map_err(report)?;
        let (i1, _) = run(root, dir, case, n1, Some(d2)).map_err(report)?;
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

/// Instructions per second of an idle Envoy running `case`'s filters (no
/// request): the slope between an idle phase of `short` and one of `long`, each
/// run once per `repeats` and the lowest total kept. What grows with idle time is
/// the timers: Envoy's own and the filter's 1 s tick (the sweeper's work).
pub fn idle_per_second(
    root: &Path,
    dir: &Path,
    case: &Case,
    short: Duration,
    long: Duration,
    repeats: u32,
) -> Result<f64> {
    let mut best: Option<(u64, u64)> = None;
    for _ in 0..repeats.max(1) {
        let (i2, _) = run(root, dir, case, 0, Some(long))?;
        let (i1, _) = run(root, dir, case, 0, Some(short))?;
        best = Some(best.map_or((i1, i2), |(b1, b2)| (b1.min(i1), b2.min(i2))));
    }
    let (i1, i2) = best.ok_or_else(|| anyhow!("no run"))?;
    let seconds = long.saturating_sub(short).as_secs_f64().max(1e-3);
    let per_second = (i2 as f64 - i1 as f64) / seconds;
    eprintln!(
        "  {:<34} {:>12.0} instr/s idle ({} → {} s)",
        case.id,
        per_second,
        short.as_secs(),
        long.as_secs()
    );
    Ok(per_second)
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
