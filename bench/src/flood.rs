//! Hostile volume and a soak (issue 13, §5), outside `make test`:
//! - **flood**: 1,000,000 joins of 1,000,000 distinct hunt ids, then 1,000,000 joins of
//!   1,000,000 distinct (anonymous) hunters into one hunt, thrown at one Envoy (2 workers)
//!   with h2load: Envoy's RSS before and after, the answers by status, and the filter's
//!   own counters;
//! - **soak**: steady anonymous joins into 100 hunts whose sessions expire
//!   (`session_ttl_s` 10) for a given time, RSS and counters sampled every minute; at the
//!   end, once every session's TTL passed, the count must be back at zero (admitted =
//!   expired) and RSS flat between the first and the last sample.

// serde_json `Value` indexing returns Null for what is missing; it does not panic on reads,
// and the writes here are to objects built just above.
#![allow(clippy::indexing_slicing)]

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

use crate::envoy::{rss_bytes, Envoy, EnvoySpec};
use crate::filters::Filters;

/// h2load processes of the distinct-hunt-id phase (each one client on its own ids).
const PARTS: u64 = 4;
/// Envoy workers of both runs.
const WORKERS: u32 = 2;
/// Session lifetime of the soak (and of the flood: junk expires while it runs).
const SESSION_TTL_S: u64 = 10;

fn mib(bytes: u64) -> f64 {
    (bytes as f64 / 1_048_576.0 * 10.0).round() / 10.0
}

/// The plugin configuration: anonymous hunters (every request without a ticket is a new
/// hunter), standalone, `max_hunters` per hunt.
fn config(max_hunters: u32) -> String {
    format!(
        r#"{{"mode":"enforce","standalone":true,"hunt":{{"path_prefix":"/hunts/"}},"hunter":{{"anonymous":true}},"session_ttl_s":{SESSION_TTL_S},"ticket_secrets":["{}"],"max_hunters":{max_hunters},"max_tracked_hunts":1024,"reject":{{"status":429,"retry_after_s":30}}}}"#,
        crate::filters::TICKET_SECRET
    )
}

fn start(root: &Path, dir: &Path, name: &str, wasm: &Path, max_hunters: u32) -> Result<Envoy> {
    let spec = EnvoySpec {
        filters: Filters::Raw {
            wasm: wasm.to_path_buf(),
            configuration: config(max_hunters),
        },
        workers: WORKERS,
        governor_port: None,
        upstream_port: None,
        cachegrind_out: None,
    };
    let envoy = Envoy::start(root, dir, name, &spec, Duration::from_secs(60))?;
    envoy.settle(Duration::from_secs(60))?;
    Ok(envoy)
}

/// Writes `count` URIs `http://127.0.0.1:PORT/hunts/<hunt(i)>/join` to `path`.
fn uris(path: &Path, port: u16, count: u64, hunt: impl Fn(u64) -> String) -> Result<()> {
    let mut out = std::io::BufWriter::new(fs::File::create(path)?);
    for i in 0..count {
        writeln!(out, "http://127.0.0.1:{port}/hunts/{}/join", hunt(i))?;
    }
    out.flush()?;
    Ok(())
}

/// h2load's summary: (requests done, 2xx, 4xx, 5xx, requests/s).
fn parse_h2load(text: &str) -> Result<Value> {
    let number_before = |line: &str, word: &str| -> Option<u64> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let i = words.iter().position(|w| w.trim_end_matches(',') == word)?;
        words.get(i.checked_sub(1)?)?.parse().ok()
    };
    let requests = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .context("h2load printed no `requests:` line")?;
    let codes = text
        .lines()
        .find(|l| l.starts_with("status codes:"))
        .context("h2load printed no `status codes:` line")?;
    let rps = text
        .lines()
        .find(|l| l.starts_with("finished in"))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(0.0);
    Ok(json!({
        "done": number_before(requests, "done").unwrap_or(0),
        "succeeded": number_before(requests, "succeeded").unwrap_or(0),
        "2xx": number_before(codes, "2xx").unwrap_or(0),
        "4xx": number_before(codes, "4xx").unwrap_or(0),
        "5xx": number_before(codes, "5xx").unwrap_or(0),
        "requests_per_s": rps.round(),
    }))
}

fn h2load(args: &[String]) -> Result<Value> {
    let out = Command::new("h2load")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running h2load (Debian package nghttp2-client)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "h2load failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_h2load(&text)
}

/// The filter's counters as the stats show them (what requests counted reaches
/// them on each worker's next 1 s tick: see [`settled_counters`]).
fn counters(envoy: &Envoy) -> Result<Value> {
    let mut out = serde_json::Map::new();
    for name in [
        "wasmcustom.huntgate_admitted",
        "wasmcustom.huntgate_rejected",
        "wasmcustom.huntgate_expired",
        "wasmcustom.huntgate_untracked_hunt",
        "wasmcustom.huntgate_store_error",
        "wasmcustom.huntgate_tracked_hunts",
    ] {
        let short = name.trim_start_matches("wasmcustom.");
        out.insert(short.to_owned(), json!(envoy.stat(name)?));
    }
    Ok(Value::Object(out))
}

/// [`counters`] once every worker has ticked since the last request.
fn settled_counters(envoy: &Envoy) -> Result<Value> {
    thread::sleep(Duration::from_millis(1_500));
    counters(envoy)
}

/// The flood: `n` distinct hunt ids, then `n` distinct hunters into one hunt.
pub fn flood(root: &Path, dir: &Path, wasm: &Path, n: u64) -> Result<Value> {
    let envoy = start(root, dir, "flood", wasm, 50_000)?;
    let pid = envoy.child.id();
    let before = rss_bytes(pid)?;
    // h2load's clients each walk the whole URI list: one process of one client per
    // part, so that every hunt id is asked exactly once.
    let parts: Vec<std::path::PathBuf> = (0..PARTS)
        .map(|p| dir.join(format!("flood-hunts-{p}.txt")))
        .collect();
    for (p, file) in (0u64..).zip(&parts) {
        uris(file, envoy.port, n / PARTS, |i| format!("f{p}-{i}"))?;
    }
    let args = |file: &Path, requests: u64, clients: u32| {
        vec![
            "--h1".to_owned(),
            "-n".to_owned(),
            requests.to_string(),
            "-c".to_owned(),
            clients.to_string(),
            "-t".to_owned(),
            "1".to_owned(),
            "-i".to_owned(),
            file.display().to_string(),
        ]
    };
    let started = Instant::now();
    let runs: Vec<_> = parts
        .iter()
        .map(|file| {
            let a = args(file, n / PARTS, 1);
            thread::spawn(move || h2load(&a))
        })
        .collect();
    let mut hunts =
        json!({"done": 0, "succeeded": 0, "2xx": 0, "4xx": 0, "5xx": 0, "requests_per_s": 0});
    for run in runs {
        let r = run
            .join()
            .map_err(|_| anyhow::anyhow!("h2load thread panicked"))??;
        for key in ["done", "succeeded", "2xx", "4xx", "5xx"] {
            hunts[key] = json!(hunts[key].as_u64().unwrap_or(0) + r[key].as_u64().unwrap_or(0));
        }
        let rps = hunts["requests_per_s"].as_f64().unwrap_or(0.0)
            + r["requests_per_s"].as_f64().unwrap_or(0.0);
        hunts["requests_per_s"] = json!(rps.round());
    }
    let hunts_s = started.elapsed().as_secs();
    let after_hunts = rss_bytes(pid)?;
    let after_hunts_counters = settled_counters(&envoy)?;
    // The junk's sessions expire (its slots free) before the second phase.
    thread::sleep(Duration::from_secs(SESSION_TTL_S + 3));
    let one = dir.join("flood-hunters.txt");
    uris(&one, envoy.port, 1, |_| "big".to_owned())?;
    let started = Instant::now();
    let hunters = h2load(&args(&one, n, 16))?;
    let hunters_s = started.elapsed().as_secs();
    let after_hunters = rss_bytes(pid)?;
    let end_counters = settled_counters(&envoy)?;
    envoy.stop()?;
    for file in parts {
        let _ = fs::remove_file(file);
    }
    Ok(json!({
        "requests_per_phase": n,
        "workers": WORKERS,
        "rss_mib": {"before": mib(before), "after_hunt_ids": mib(after_hunts), "after_hunters": mib(after_hunters)},
        "distinct_hunt_ids": {"h2load": hunts, "seconds": hunts_s, "counters": after_hunts_counters},
        "distinct_hunters_one_hunt": {"h2load": hunters, "seconds": hunters_s, "counters": end_counters},
    }))
}

/// The soak: `rate` joins per second into 100 hunts for `duration`.
pub fn soak(root: &Path, dir: &Path, wasm: &Path, duration: Duration, rate: u32) -> Result<Value> {
    const HUNTS: u64 = 100;
    const CLIENTS: u32 = 4;
    let envoy = start(root, dir, "soak", wasm, 2000)?;
    let pid = envoy.child.id();
    let file = dir.join("soak-uris.txt");
    uris(&file, envoy.port, HUNTS, |i| format!("s{i}"))?;
    let args = [
        "--h1".to_owned(),
        "-c".to_owned(),
        CLIENTS.to_string(),
        "-t".to_owned(),
        "1".to_owned(),
        format!("--rps={}", (rate / CLIENTS).max(1)),
        "-D".to_owned(),
        duration.as_secs().to_string(),
        "-i".to_owned(),
        file.display().to_string(),
    ];
    let load = thread::spawn(move || h2load(&args));
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < duration {
        let c = counters(&envoy)?;
        samples.push(json!({
            "minute": started.elapsed().as_secs() / 60,
            "rss_mib": mib(rss_bytes(pid)?),
            "admitted": c["huntgate_admitted"],
            "expired": c["huntgate_expired"],
        }));
        thread::sleep(Duration::from_secs(60).min(duration.saturating_sub(started.elapsed())));
    }
    let load = load
        .join()
        .map_err(|_| anyhow::anyhow!("h2load thread panicked"))??;
    // Every session's TTL passes, and the sweeper (1 s) frees it.
    thread::sleep(Duration::from_secs(SESSION_TTL_S + 3));
    let end = counters(&envoy)?;
    let mut live = 0;
    for i in 0..HUNTS {
        live += envoy.stat(&format!("wasmcustom.huntgate_hunt.s{i}.active"))?;
    }
    let rss_end = rss_bytes(pid)?;
    envoy.stop()?;
    let first = samples
        .iter()
        .find(|s| s["minute"].as_u64() >= Some(1))
        .or(samples.first())
        .and_then(|s| s["rss_mib"].as_f64())
        .unwrap_or(0.0);
    Ok(json!({
        "minutes": duration.as_secs() / 60,
        "rate_per_s": rate,
        "hunts": HUNTS,
        "session_ttl_s": SESSION_TTL_S,
        "h2load": load,
        "samples": samples,
        "rss_mib_first_minute": first,
        "rss_mib_end": mib(rss_end),
        "counters_end": end,
        "active_sessions_at_end": live,
    }))
}

/// A Markdown summary of either run.
pub fn markdown(results: &Value) -> String {
    let mut md = String::new();
    if let Some(f) = results.get("flood") {
        let _ = writeln!(
            md,
            "Flood ({} workers): {} requests of distinct hunt ids, then {} of distinct hunters into one hunt.\n",
            f["workers"], f["requests_per_phase"], f["requests_per_phase"]
        );
        let _ = writeln!(md, "| phase | 2xx | 4xx | 5xx | req/s | Envoy RSS after (MiB) |\n|---|---:|---:|---:|---:|---:|");
        let _ = writeln!(md, "| before | | | | | {} |", f["rss_mib"]["before"]);
        for (label, key, rss) in [
            ("distinct hunt ids", "distinct_hunt_ids", "after_hunt_ids"),
            (
                "distinct hunters, one hunt",
                "distinct_hunters_one_hunt",
                "after_hunters",
            ),
        ] {
            let h = &f[key]["h2load"];
            let _ = writeln!(
                md,
                "| {label} | {} | {} | {} | {} | {} |",
                h["2xx"], h["4xx"], h["5xx"], h["requests_per_s"], f["rss_mib"][rss]
            );
        }
        let _ = writeln!(
            md,
            "\nCounters after the hunt ids: {}; at the end: {}.\n",
            f["distinct_hunt_ids"]["counters"], f["distinct_hunters_one_hunt"]["counters"]
        );
    }
    if let Some(s) = results.get("soak") {
        let _ = writeln!(md, "Soak: {} min at {} joins/s into {} hunts (session_ttl_s {}): h2load {}; RSS {} MiB after the first minute, {} MiB at the end; counters at the end {}; live sessions once every TTL passed: {}.\n",
            s["minutes"], s["rate_per_s"], s["hunts"], s["session_ttl_s"], s["h2load"], s["rss_mib_first_minute"], s["rss_mib_end"], s["counters_end"], s["active_sessions_at_end"]);
    }
    md
}
