//! The output: a plain-text table on stdout, `results.json` and `results.md`.
// Reading results by key: `serde_json::Value`'s `Index` by key returns `Null` for
// a missing key or a non-object, it never panics.
#![allow(clippy::indexing_slicing)]

use std::fmt::Write as _;
use std::fs;
use std::process::Command;

use serde_json::{json, Value};

use crate::workload::group;

/// A goal and how the measured figure compares.
#[derive(Debug, Clone)]
pub struct Goal {
    /// What is measured.
    pub what: String,
    /// The goal, as text.
    pub target: String,
    /// The measured figure, as text.
    pub measured: String,
    /// Met, missed, or unknown (not measured).
    pub met: Option<bool>,
}

impl Goal {
    /// JSON form.
    pub fn to_json(&self) -> Value {
        json!({"goal": self.what, "target": self.target, "measured": self.measured, "met": self.met})
    }

    fn verdict(&self) -> &'static str {
        match self.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "n/a",
        }
    }
}

fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .find(|line| !line.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// The machine the numbers were taken on.
pub fn machine() -> Value {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let envoy = crate::envoy::envoy_binary(std::path::Path::new("."))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "envoy".to_string());
    json!({
        "cpu": cpu,
        "cores": cores,
        "kernel": first_line("uname", &["-r"]),
        // `<path>  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL`
        "envoy": first_line(&envoy, &["--version"])
            .split("version:")
            .nth(1)
            .and_then(|v| v.trim().split('/').nth(1))
            .unwrap_or("")
            .to_string(),
        "valgrind": first_line("valgrind", &["--version"]),
        "date_utc": first_line("date", &["-u", "+%Y-%m-%d %H:%M"]),
    })
}

/// `k` with one decimal: 72811 → "72.8k".
pub fn kilo(n: f64) -> String {
    if n.is_nan() {
        return "–".to_string();
    }
    format!("{:.1}k", n / 1000.0)
}

/// Renders the results as (plain text, markdown).
pub fn render(results: &Value, goals: &[Goal]) -> (String, String) {
    let mut text = String::new();
    let mut md = String::new();
    let m = &results["machine"];
    let _ = writeln!(
        text,
        "huntgate bench — {} ({} cores), Envoy {}, {}, {}",
        m["cpu"].as_str().unwrap_or(""),
        m["cores"],
        m["envoy"].as_str().unwrap_or(""),
        m["valgrind"].as_str().unwrap_or(""),
        m["date_utc"].as_str().unwrap_or("")
    );
    let _ = writeln!(
        md,
        "Measured on {} ({} cores, shared), Envoy {}, {}, {} UTC.\n",
        m["cpu"].as_str().unwrap_or(""),
        m["cores"],
        m["envoy"].as_str().unwrap_or(""),
        m["valgrind"].as_str().unwrap_or(""),
        m["date_utc"].as_str().unwrap_or("")
    );
    let instr = &results["instructions"];
    let _ = writeln!(
        text,
        "\nInstructions per request (cachegrind, Envoy --concurrency 1, slope between request counts)"
    );
    let _ = writeln!(
        text,
        "{:<18} {:<26} {:<24} {:>10} {:>10}",
        "filter", "requests", "state", "instr/req", "vs bare"
    );
    let _ = writeln!(md, "| filter | requests | state | instructions / request | added vs bare |\n|---|---|---|---:|---:|");
    for case in instr["cases"].as_array().into_iter().flatten() {
        let state = format!(
            "{} × {}",
            group(case["hunts"].as_u64().unwrap_or(0) as u32),
            group(case["hunters_per_hunt"].as_u64().unwrap_or(0) as u32)
        );
        let traffic = case["traffic"].as_str().unwrap_or("hot-path-shaped");
        let filters = case["filters"].as_str().unwrap_or("");
        let (per, added) = match case["error"].as_str() {
            Some(_) => ("failed".to_string(), "–".to_string()),
            None => (
                group(case["instructions_per_request"].as_f64().unwrap_or(0.0) as u32),
                case["added_vs_bare"]
                    .as_f64()
                    .map(|a| match case["baseline"].as_str() {
                        Some(baseline) => format!("{:+} vs {baseline}", a.round() as i64),
                        None => format!("{:+}", a.round() as i64),
                    })
                    .unwrap_or_default(),
            ),
        };
        let _ = writeln!(
            text,
            "{filters:<18} {traffic:<26} {state:<24} {per:>10} {added:>10}"
        );
        let _ = writeln!(md, "| {filters} | {traffic} | {state} | {per} | {added} |");
    }
    let _ = writeln!(md);
    if let Some(calls) = results
        .get("host_calls")
        .filter(|c| c.get("paths").is_some())
    {
        let table = crate::crossings::markdown(calls);
        let _ = writeln!(
            text,
            "\nHost calls and bytes per request (Envoy's trace of the Wasm boundary)\n{table}"
        );
        let _ = writeln!(md, "Host calls and bytes per request (Envoy's trace of the Wasm boundary, {} requests per path):\n\n{table}", calls["requests"]);
    }
    if let Some(load) = results.get("load").filter(|l| !l.is_null()) {
        let _ = writeln!(
            text,
            "\nThroughput (wrk, --concurrency 1, median of interleaved rounds){}",
            noisy_note(load)
        );
        let _ = writeln!(
            md,
            "| throughput (wrk, 1 worker, median) | req/s | × bare |\n|---|---:|---:|"
        );
        for t in load["throughput"].as_array().into_iter().flatten() {
            let _ = writeln!(
                text,
                "{:<18} {:>10} req/s {:>6}×",
                t["variant"].as_str().unwrap_or(""),
                t["median_rps"],
                t["ratio_to_bare"]
            );
            let _ = writeln!(
                md,
                "| {} | {} | {} |",
                t["variant"].as_str().unwrap_or(""),
                t["median_rps"],
                t["ratio_to_bare"]
            );
        }
        let _ = writeln!(
            text,
            "latency at {} req/s (open loop, h2load): added p50 {} µs, added p99 {} µs",
            load["latency_rate_rps"], load["added_p50_us"], load["added_p99_us"]
        );
        let _ = writeln!(md, "\nLatency at {} req/s (half of bare, h2load open loop): added p50 {} µs, added p99 {} µs; bare spread between rounds {} (load average {} → {}).\n", load["latency_rate_rps"], load["added_p50_us"], load["added_p99_us"], load["bare_spread_max_over_min"], load["load_average_before"].as_str().unwrap_or(""), load["load_average_after"].as_str().unwrap_or(""));
        if let Some(proxied) = load.get("proxied").filter(|p| !p.is_null()) {
            proxied_table(&mut text, &mut md, proxied);
        }
    }
    if let Some(control) = results.get("control").filter(|c| !c.is_null()) {
        let _ = writeln!(
            text,
            "\nControl path: change at the governor → enforced on every Envoy worker (2 workers)"
        );
        let _ = writeln!(md, "| control path (2 workers) | n | p50 ms | p90 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|---:|");
        for (name, key) in [
            ("pin_ratio edit, polling 1 s", "poll"),
            ("pin_ratio edit, long-poll", "long_poll"),
            ("Redis crossing 80 %, long-poll", "redis"),
        ] {
            let s = &control[key]["every_worker"];
            if s.is_null() {
                continue;
            }
            let _ = writeln!(
                text,
                "{name:<34} n={:<3} p50 {:>6} ms  p90 {:>6} ms  p99 {:>6} ms  max {:>6} ms",
                s["n"], s["p50_ms"], s["p90_ms"], s["p99_ms"], s["max_ms"]
            );
            let _ = writeln!(
                md,
                "| {name} | {} | {} | {} | {} | {} |",
                s["n"], s["p50_ms"], s["p90_ms"], s["p99_ms"], s["max_ms"]
            );
        }
        let _ = writeln!(md);
    }
    if let Some(f) = results.get("footprint").filter(|f| !f.is_null()) {
        let r = &f["envoy_rss_mib"];
        let _ = writeln!(text, "\nFootprint: wasm {} KiB (largest function {} B); Envoy RSS bare {}/{} MiB, huntgate {}/{} MiB (1/2 workers): +{} MiB at 2 workers, +{} MiB per extra worker VM; {} B RSS per hunter at 50,000", f["wasm_kib"], f["largest_function_bytes"], r["bare_1_worker"], r["bare_2_workers"], r["huntgate_1_worker"], r["huntgate_2_workers"], f["huntgate_extra_mib_2_workers"], f["huntgate_extra_mib_per_worker_vm"], f["measured_rss_bytes_per_hunter_at_50000"]);
        let _ = writeln!(md, "Footprint: `dist/huntgate.wasm` {} KiB, its largest function {} B. Envoy RSS bare {} / {} MiB, with huntgate {} / {} MiB (1 / 2 workers): +{} MiB at 2 workers, +{} MiB per extra worker VM. Shared data per hunt: a {} B count + {} B per active hunter in {} shards ({} keys, at the default 1,024 slots); measured RSS growth {} B per hunter with 50,000 hunters in one hunt.\n", f["wasm_kib"], f["largest_function_bytes"], r["bare_1_worker"], r["bare_2_workers"], r["huntgate_1_worker"], r["huntgate_2_workers"], f["huntgate_extra_mib_2_workers"], f["huntgate_extra_mib_per_worker_vm"], f["count_bytes"], f["record_bytes"], f["shards_per_slot"], f["keys_per_slot"], f["measured_rss_bytes_per_hunter_at_50000"]);
    }
    if let Some(g) = results.get("governor").filter(|g| !g.is_null()) {
        let _ = writeln!(text, "Governor: idle {}% CPU, {} MiB; {} pollers (1/s): {}% CPU, {} MiB; {} long-pollers: {}% CPU, {} MiB", g["idle"]["cpu_percent"], g["idle"]["rss_mib"], g["poll"]["pollers"], g["poll"]["cpu_percent"], g["poll"]["rss_mib"], g["long_poll"]["pollers"], g["long_poll"]["cpu_percent"], g["long_poll"]["rss_mib"]);
        let _ = writeln!(md, "Governor (100 hunt files): idle {} % CPU, {} MiB RSS; {} proxies polling every second: {} % CPU, {} MiB; {} proxies long-polling: {} % CPU, {} MiB.\n", g["idle"]["cpu_percent"], g["idle"]["rss_mib"], g["poll"]["pollers"], g["poll"]["cpu_percent"], g["poll"]["rss_mib"], g["long_poll"]["pollers"], g["long_poll"]["cpu_percent"], g["long_poll"]["rss_mib"]);
    }
    crate::fleet::render(&results["fleet"], &mut text, &mut md);
    let _ = writeln!(text, "\nGoals");
    let _ = writeln!(md, "| goal | target | measured | |\n|---|---|---|---|");
    for goal in goals {
        let _ = writeln!(
            text,
            "{:<44} {:<16} {:<22} {}",
            goal.what,
            goal.target,
            goal.measured,
            goal.verdict()
        );
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            goal.what,
            goal.target,
            goal.measured,
            goal.verdict()
        );
    }
    (text, md)
}

/// The proxied rounds: throughput and added latency of each variant proxying to a
/// small upstream (bare Envoy with a `direct_response`).
fn proxied_table(text: &mut String, md: &mut String, proxied: &Value) {
    let _ = writeln!(
        text,
        "\nProxying to an upstream (wrk, 1 worker, median of interleaved rounds; latency at {} req/s){}",
        proxied["latency_rate_rps"],
        noisy_note(proxied)
    );
    let _ = writeln!(
        md,
        "| proxying to an upstream (1 worker) | req/s | × bare | added p50 µs | added p99 µs |\n|---|---:|---:|---:|---:|"
    );
    let latency = proxied["latency"].as_array().cloned().unwrap_or_default();
    for t in proxied["throughput"].as_array().into_iter().flatten() {
        let variant = t["variant"].as_str().unwrap_or("");
        let lat = latency.iter().find(|l| l["variant"] == variant);
        let field = |key: &str| {
            lat.and_then(|l| l[key].as_f64())
                .map_or_else(|| "–".to_string(), |v| format!("{v:+.0}"))
        };
        let (p50, p99) = (field("added_p50_us"), field("added_p99_us"));
        let _ = writeln!(
            text,
            "{variant:<18} {:>10} req/s {:>6}×  added p50 {p50} µs, p99 {p99} µs",
            t["median_rps"], t["ratio_to_bare"]
        );
        let _ = writeln!(
            md,
            "| {variant} | {} | {} | {p50} | {p99} |",
            t["median_rps"], t["ratio_to_bare"]
        );
    }
    let _ = writeln!(
        md,
        "\nProxied: bare spread between rounds {} (load average {} → {}).\n",
        proxied["bare_spread_max_over_min"],
        proxied["load_average_before"].as_str().unwrap_or(""),
        proxied["load_average_after"].as_str().unwrap_or("")
    );
}

/// " — NOISY machine" when a set of load rounds was flagged noisy, else "".
fn noisy_note(set: &Value) -> &'static str {
    if set["noisy"].as_bool() == Some(true) {
        " — NOISY machine"
    } else {
        ""
    }
}
