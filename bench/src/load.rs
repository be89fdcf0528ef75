//! Secondary, wall-clock figures (noisy on a shared machine): throughput at
//! saturation (wrk, interleaved rounds, median) as a ratio to bare Envoy, and
//! latency at half of bare capacity with an open-loop generator (h2load --rps).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

use crate::envoy::{Envoy, EnvoySpec};
use crate::filters::Filters;
use crate::workload::{Requests, Scale, Traffic, HUNTER_HEADER, TICKET_HEADER};

/// Load settings.
#[derive(Debug, Clone, Copy)]
pub struct LoadSettings {
    /// Interleaved rounds (median taken).
    pub rounds: u32,
    /// Seconds per wrk run.
    pub wrk_s: u32,
    /// Seconds per h2load run.
    pub latency_s: u32,
}

/// The hot-path request's headers (one admitted hunter, a valid ticket).
fn hot_headers() -> Result<Vec<(String, String)>> {
    let requests = Requests::new(Scale {
        hunts: 1,
        active_hunts: 1,
        hunters: 1,
    })?;
    let raw = String::from_utf8(requests.measured(Traffic::Hot, 0))?;
    Ok(raw
        .lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(n, _)| *n == HUNTER_HEADER || *n == TICKET_HEADER)
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect())
}

fn wrk(port: u16, seconds: u32, headers: &[(String, String)]) -> Result<f64> {
    let mut command = Command::new("wrk");
    command.args(["-t1", "-c16", &format!("-d{seconds}s")]);
    for (name, value) in headers {
        command.arg("-H").arg(format!("{name}: {value}"));
    }
    let output = command
        .arg(format!("http://127.0.0.1:{port}/hunts/h0/play"))
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if text.contains("Non-2xx") {
        bail!("wrk saw non-2xx answers:\n{text}");
    }
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk output:\n{text}"))
}

/// (p50, p99) in µs of an open-loop run at `rate` requests/s.
fn h2load(
    port: u16,
    rate: f64,
    seconds: u32,
    headers: &[(String, String)],
    log: &Path,
) -> Result<(f64, f64, u64)> {
    const CLIENTS: u32 = 8;
    let per_client = (rate / f64::from(CLIENTS)).max(1.0).round() as u64;
    let mut command = Command::new("h2load");
    command.args([
        "--h1",
        "-c",
        &CLIENTS.to_string(),
        "-t",
        "1",
        &format!("--rps={per_client}"),
        "-D",
        &seconds.to_string(),
    ]);
    command.arg(format!("--log-file={}", log.display()));
    for (name, value) in headers {
        command.arg("-H").arg(format!("{name}: {value}"));
    }
    let output = command
        .arg(format!("http://127.0.0.1:{port}/hunts/h0/play"))
        .output()
        .context("running h2load")?;
    if !output.status.success() {
        bail!("h2load failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let text = fs::read_to_string(log)?;
    let mut micros: Vec<f64> = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.get(1).copied() != Some("200") {
            bail!("h2load saw a non-200 answer: {line}");
        }
        if let Some(us) = fields.get(2).and_then(|v| v.parse().ok()) {
            micros.push(us);
        }
    }
    micros.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| {
        micros
            .get(((micros.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    Ok((pick(0.5), pick(0.99), micros.len() as u64))
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Throughput and latency of bare Envoy, huntgate (hot path), the empty filter and
/// local_ratelimit: answering with a `direct_response` (the top-level keys), then
/// proxying every request to a small upstream (`proxied`, the same keys).
pub fn measure(
    root: &Path,
    dir: &Path,
    wasm: &Path,
    empty: &Path,
    settings: LoadSettings,
) -> Result<Value> {
    let mut direct = measure_variants(root, dir, wasm, empty, settings, None)?;
    // The upstream: bare Envoy answering `200 ok` on one worker of its own.
    let upstream_spec = EnvoySpec {
        filters: Filters::Bare,
        workers: 1,
        governor_port: None,
        upstream_port: None,
        cachegrind_out: None,
    };
    let upstream = Envoy::start(
        root,
        dir,
        "load-upstream",
        &upstream_spec,
        Duration::from_secs(60),
    )?;
    let proxied = measure_variants(root, dir, wasm, empty, settings, Some(upstream.port));
    upstream.stop()?;
    if let Some(fields) = direct.as_object_mut() {
        fields.insert("proxied".to_string(), proxied?);
    }
    Ok(direct)
}

/// One set of interleaved rounds over the four variants; with `upstream_port`, each
/// variant proxies to it.
fn measure_variants(
    root: &Path,
    dir: &Path,
    wasm: &Path,
    empty: &Path,
    settings: LoadSettings,
    upstream_port: Option<u16>,
) -> Result<Value> {
    let headers = hot_headers()?;
    let tag = if upstream_port.is_some() {
        "proxied-"
    } else {
        ""
    };
    let variants = [
        ("bare", Filters::Bare),
        (
            "huntgate",
            Filters::Huntgate {
                wasm: wasm.to_path_buf(),
                max_hunters: 10_000_000,
                max_tracked_hunts: 1024,
                listed_hunts: 0,
                feed: None,
            },
        ),
        ("empty-wasm", Filters::EmptyWasm(empty.to_path_buf())),
        ("local_ratelimit", Filters::LocalRateLimit { hunts: 1 }),
    ];
    let load_before = load_average();
    let mut envoys = Vec::new();
    for (name, filters) in &variants {
        let spec = EnvoySpec {
            filters: filters.clone(),
            workers: 1,
            governor_port: None,
            upstream_port,
            cachegrind_out: None,
        };
        let envoy = Envoy::start(
            root,
            dir,
            &format!("load-{tag}{name}"),
            &spec,
            Duration::from_secs(60),
        )?;
        wrk(envoy.port, 1, &headers)?;
        envoys.push((*name, envoy));
    }
    let mut rps: Vec<Vec<f64>> = vec![Vec::new(); envoys.len()];
    for _ in 0..settings.rounds {
        for ((_, envoy), samples) in envoys.iter().zip(rps.iter_mut()) {
            samples.push(wrk(envoy.port, settings.wrk_s, &headers)?);
        }
    }
    let medians: Vec<f64> = rps.iter().map(|s| median(s)).collect();
    let bare = medians.first().copied().unwrap_or(f64::NAN);
    let bare_samples = rps.first().cloned().unwrap_or_default();
    let spread = bare_samples.iter().copied().fold(f64::MIN, f64::max)
        / bare_samples.iter().copied().fold(f64::MAX, f64::min)
        - 1.0;
    let rate = bare / 2.0;
    let mut latency = Vec::new();
    for (name, envoy) in &envoys {
        let (p50, p99, n) = h2load(
            envoy.port,
            rate,
            settings.latency_s,
            &headers,
            &dir.join(format!("h2load-{tag}{name}.log")),
        )?;
        latency.push(json!({"variant": name, "p50_us": p50, "p99_us": p99, "requests": n}));
    }
    // Added over bare (the first variant), for the variant at `index`.
    let added = |index: usize, key: &str| -> f64 {
        let get = |i: usize| {
            latency
                .get(i)
                .and_then(|v: &Value| v[key].as_f64())
                .unwrap_or(f64::NAN)
        };
        get(index) - get(0)
    };
    let added_each: Vec<(f64, f64)> = (0..latency.len())
        .map(|i| (added(i, "p50_us").round(), added(i, "p99_us").round()))
        .collect();
    // The top-level figures are huntgate's (the second variant).
    let (added_p50, added_p99) = added_each.get(1).copied().unwrap_or((f64::NAN, f64::NAN));
    for (entry, (p50, p99)) in latency.iter_mut().zip(added_each).skip(1) {
        if let Some(fields) = entry.as_object_mut() {
            fields.insert("added_p50_us".to_string(), json!(p50));
            fields.insert("added_p99_us".to_string(), json!(p99));
        }
    }
    for (_, envoy) in envoys {
        envoy.stop()?;
    }
    let throughput: Vec<Value> = variants
        .iter()
        .zip(&rps)
        .zip(&medians)
        .map(|(((name, _), samples), median)| {
            json!({
                "variant": name,
                "median_rps": median.round(),
                "ratio_to_bare": (median / bare * 1000.0).round() / 1000.0,
                "rounds_rps": samples.iter().map(|s| s.round()).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(json!({
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "bare_spread_max_over_min": (spread * 1000.0).round() / 1000.0,
        "noisy": spread > 0.10,
        "throughput": throughput,
        "latency_rate_rps": rate.round(),
        "latency": latency,
        "added_p50_us": added_p50.round(),
        "added_p99_us": added_p99.round(),
    }))
}
