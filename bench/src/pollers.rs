//! Governor footprint: RSS and CPU at idle and under 1,000 simulated proxies
//! (plain pollers once a second, or long-pollers holding `?wait_s=25`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde_json::{json, Value};

use crate::control::{Governor, Policies};
use crate::envoy::{cpu_ticks, rss_bytes};
use crate::http::{self, Connection};
use crate::process::Checked as _;

/// Clock ticks per second of /proc CPU times.
const TICKS_PER_S: f64 = 100.0;

/// CPU (% of one core) and RSS of `pid` over `window`.
pub fn sample(pid: u32, window: Duration) -> Result<(f64, u64)> {
    let before = cpu_ticks(pid)?;
    let start = Instant::now();
    thread::sleep(window);
    let ticks = cpu_ticks(pid)?.saturating_sub(before);
    let cpu = ticks as f64 / TICKS_PER_S / start.elapsed().as_secs_f64() * 100.0;
    Ok((cpu, rss_bytes(pid)?))
}

/// How the simulated proxies ask.
#[derive(Debug, Clone, Copy)]
enum Style {
    Poll,
    LongPoll,
}

fn poller(port: u16, style: Style, stop: &AtomicBool, done: &AtomicU64, failed: &AtomicU64) {
    let mut etag = String::new();
    let mut connection: Option<Connection> = None;
    while !stop.load(Ordering::Relaxed) {
        let path = match style {
            Style::Poll => "/v1/throttle".to_string(),
            Style::LongPoll => "/v1/throttle?wait_s=25".to_string(),
        };
        let request = if etag.is_empty() {
            http::get(&path, &[])
        } else {
            http::get(&path, &[("if-none-match", &etag)])
        };
        let outcome = match connection.as_mut() {
            Some(c) => c.round_trip(&request),
            None => Connection::open(port, Duration::from_secs(40)).and_then(|mut c| {
                let r = c.round_trip(&request);
                connection = Some(c);
                r
            }),
        };
        match outcome {
            Ok(response) => {
                if let Some(tag) = response.header("etag") {
                    etag = tag.to_string();
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                failed.fetch_add(1, Ordering::Relaxed);
                connection = None;
            }
        }
        if matches!(style, Style::Poll) {
            thread::sleep(Duration::from_secs(1));
        }
    }
}

fn under_load(pid: u32, port: u16, style: Style, pollers: u32, window: Duration) -> Result<Value> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for _ in 0..pollers {
        let (stop, done, failed) = (stop.clone(), done.clone(), failed.clone());
        let handle = thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || poller(port, style, &stop, &done, &failed))
            .context("spawn poller thread")?;
        handles.push(handle);
    }
    thread::sleep(Duration::from_secs(3));
    let before = done.load(Ordering::Relaxed);
    let (cpu, rss) = sample(pid, window)?;
    let answered = done.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    Ok(json!({
        "pollers": pollers,
        "style": match style { Style::Poll => "poll every 1 s", Style::LongPoll => "long-poll wait_s=25" },
        "cpu_percent": (cpu * 10.0).round() / 10.0,
        "rss_mib": (rss as f64 / 1048576.0 * 10.0).round() / 10.0,
        "answers_per_s": (answered as f64 / window.as_secs_f64()).round(),
        "failed": failed.load(Ordering::Relaxed),
        "_threads": handles.len(),
    }))
}

/// Governor RSS/CPU idle, with `pollers` plain pollers, then with `pollers` long-pollers.
/// The long-pollers' threads are left to finish their 25 s wait on shutdown (the
/// governor answers them 304 at once when it stops).
pub fn governor_footprint(
    root: &Path,
    dir: &Path,
    pollers: u32,
    window: Duration,
) -> Result<Value> {
    let policies = Policies::new(
        dir.join("policies-footprint"),
        "eval_period_s: 5\nmax_hunters: 2000\ngovern_unlisted: false\n",
    )?;
    for k in 0..100 {
        policies.set_hunt(&format!("h{k}"), "max_hunters: 2000\n")?;
    }
    // One connection per poller (the governor's default cap is 512).
    let connections = (pollers + 64).to_string();
    let mut governor = Governor::start_with(
        root,
        policies.path(),
        &dir.join("governor-footprint.log"),
        None,
        &["--max-connections", &connections],
    )?;
    let pid = governor.child.id();
    thread::sleep(Duration::from_secs(2));
    let (idle_cpu, idle_rss) = sample(pid, window)?;
    let poll = under_load(pid, governor.port, Style::Poll, pollers, window)?;
    let long_poll = under_load(pid, governor.port, Style::LongPoll, pollers, window)?;
    governor.child.stop_checked(Duration::from_secs(30))?;
    Ok(json!({
        "binary": crate::control::governor_binary(root)?.display().to_string(),
        "hunt_files": 100,
        "idle": {
            "cpu_percent": (idle_cpu * 10.0).round() / 10.0,
            "rss_mib": (idle_rss as f64 / 1048576.0 * 10.0).round() / 10.0,
        },
        "poll": poll,
        "long_poll": long_poll,
    }))
}
