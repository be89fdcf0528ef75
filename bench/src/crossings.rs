//! Host calls and bytes per request, per path, counted by Envoy itself: one Envoy
//! (`--concurrency 1`, not under valgrind) per path, prefilled like the instruction
//! counts, then its Wasm runtime's trace turned on (admin `POST /logging?wasm=trace`)
//! for [`REQUESTS`] measured requests, read back with [`huntgate_harness::wasm_trace`].
//! No instrumented build: the module measured is `dist/huntgate.wasm`.

use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use huntgate_harness::wasm_trace::{self, Tally};
use serde_json::{json, Value};

use crate::envoy::{Envoy, EnvoySpec};
use crate::filters::huntgate;
use crate::http::{self, Connection};
use crate::workload::{group, Requests, Scale, Traffic};

/// Measured requests per path (every one is tallied; they should all agree).
pub const REQUESTS: u32 = 20;

/// One path to count.
struct CountedPath {
    id: &'static str,
    traffic: Traffic,
    scale: Scale,
    max_hunters: u32,
}

fn paths() -> Vec<CountedPath> {
    let one = |hunters| Scale {
        hunts: 1,
        active_hunts: 1,
        hunters,
    };
    let path = |id, traffic, scale, max_hunters| CountedPath {
        id,
        traffic,
        scale,
        max_hunters,
    };
    vec![
        path("hot", Traffic::Hot, one(10), 10_000_000),
        path("non-hunt", Traffic::NonHunt, one(10), 10_000_000),
        path(
            "non-hunt-skipped",
            Traffic::NonHuntSkipped,
            one(10),
            10_000_000,
        ),
        path("join-admit", Traffic::JoinAdmit, one(10), 10_000_000),
        path("join-reject", Traffic::JoinReject, one(10), 10),
        path(
            "join-admit@1x50000",
            Traffic::JoinAdmit,
            one(50_000),
            10_000_000,
        ),
        path(
            "join-reject@1x50000",
            Traffic::JoinReject,
            one(50_000),
            50_000,
        ),
    ]
}

/// Every path's tally, as JSON (`{"requests": N, "paths": [...]}`).
pub fn measure(root: &Path, dir: &Path, wasm: &Path) -> Result<Value> {
    let mut out = Vec::new();
    for path in paths() {
        let tallies =
            count(root, dir, wasm, &path).with_context(|| format!("host calls of {}", path.id))?;
        out.push(path_json(&path, &tallies));
    }
    Ok(json!({"requests": REQUESTS, "paths": out}))
}

/// One Envoy: prefill, trace on, the measured requests, stop; their tallies.
fn count(root: &Path, dir: &Path, wasm: &Path, path: &CountedPath) -> Result<Vec<Tally>> {
    let name = format!("crossings-{}", path.id.replace('@', "-"));
    let spec = EnvoySpec {
        filters: huntgate(wasm, path.max_hunters, path.scale),
        workers: 1,
        governor_port: None,
        upstream_port: None,
        cachegrind_out: None,
    };
    let requests = Requests::new(path.scale)?;
    let envoy = Envoy::start(root, dir, &name, &spec, Duration::from_secs(120))?;
    let mut connection = Connection::open(envoy.port, Duration::from_secs(60))?;
    requests.prefill(&mut connection)?;
    if path.traffic == Traffic::Hot {
        requests.warm_hot(&mut connection)?;
    }
    let log_path = dir.join(format!("{name}.log"));
    let mut admin = Connection::open(envoy.admin_port, Duration::from_secs(10))?;
    let traced = admin.round_trip(&http::post_json(wasm_trace::TRACE_ON, b""))?;
    if traced.status != 200 {
        bail!(
            "{name}: {} answered {}",
            wasm_trace::TRACE_ON,
            traced.status
        );
    }
    let offset = fs::metadata(&log_path)?.len();
    let expected = path.traffic.expected_status();
    for i in 0..REQUESTS {
        let response = connection.round_trip(&requests.measured(path.traffic, i))?;
        if response.status != expected {
            bail!(
                "{name}: request {i} got {} (expected {expected}): {}",
                response.status,
                response.body
            );
        }
    }
    drop(connection);
    envoy.stop()?;
    let tallies = wasm_trace::tallies_since(&log_path, offset)?;
    if let Some(open) = tallies.iter().position(|t| !t.closed) {
        bail!(
            "{name}: stream {open} was not deleted before Envoy stopped (see {})",
            log_path.display()
        );
    }
    // A route that skips the filter may create no context at all.
    let skipped = path.traffic == Traffic::NonHuntSkipped && tallies.is_empty();
    if !skipped && tallies.len() != REQUESTS as usize {
        bail!(
            "{name}: {} streams traced for {REQUESTS} requests (see {})",
            tallies.len(),
            log_path.display()
        );
    }
    Ok(tallies)
}

/// A path's figures: the host calls most of its requests made (and how many made
/// others), and each byte count's median and range over all of them (a join's
/// shard holds more or fewer records from one hunter to the next).
fn path_json(path: &CountedPath, tallies: &[Tally]) -> Value {
    let calls = |t: &Tally| {
        (
            t.into_vm,
            t.allocations,
            t.host_calls.clone(),
            t.shared_reads,
            t.shared_writes,
        )
    };
    let typical = tallies
        .iter()
        .max_by_key(|t| tallies.iter().filter(|u| calls(u) == calls(t)).count())
        .cloned()
        .unwrap_or_default();
    let differing = tallies
        .iter()
        .filter(|t| calls(t) != calls(&typical))
        .count();
    let bytes = |of: fn(&Tally) -> u64| {
        let mut values: Vec<u64> = tallies.iter().map(of).collect();
        values.sort_unstable();
        json!({
            "median": values.get(values.len() / 2).copied().unwrap_or(0),
            "min": values.first().copied().unwrap_or(0),
            "max": values.last().copied().unwrap_or(0),
        })
    };
    json!({
        "id": path.id,
        "traffic": path.traffic.label(),
        "active": path.scale.hunters,
        "label": format!("{}, {} active", path.traffic.label(), group(path.scale.hunters)),
        "streams": tallies.len(),
        "differing": differing,
        "into_vm": typical.into_vm,
        "allocations": typical.allocations,
        "host_calls_total": typical.host_calls_total(),
        "host_calls": typical.host_calls,
        "shared_reads": typical.shared_reads,
        "shared_writes": typical.shared_writes,
        "bytes_in": bytes(|t| t.bytes_in),
        "bytes_out": bytes(|t| t.bytes_out),
        "shared_bytes_in": bytes(|t| t.shared_bytes_in),
        "shared_bytes_out": bytes(|t| t.shared_bytes_out),
    })
}

/// "median" or "median (min–max)".
fn spread(bytes: &Value) -> String {
    let (median, min, max) = (&bytes["median"], &bytes["min"], &bytes["max"]);
    if min == max {
        median.to_string()
    } else {
        format!("{median} ({min}–{max})")
    }
}

/// The table of [`measure`]'s result (Markdown).
pub fn markdown(result: &Value) -> String {
    let mut md = String::from(
        "| path | calls into the VM | host calls | of them shared data (reads / writes) | bytes into the VM | bytes out | shared-data value bytes in / out | host calls by name |\n|---|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for p in result["paths"].as_array().into_iter().flatten() {
        let by_name: Vec<String> = p["host_calls"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(name, n)| format!("{} × {n}", name.trim_start_matches("proxy_")))
            .collect();
        let varies = match p["differing"].as_u64() {
            Some(0) | None => String::new(),
            Some(n) => format!(" ({n} of {} requests made other calls)", p["streams"]),
        };
        md.push_str(&format!(
            "| {}{varies} | {} (+{} allocations) | {} | {} / {} | {} | {} | {} / {} | {} |\n",
            p["label"].as_str().unwrap_or_default(),
            p["into_vm"],
            p["allocations"],
            p["host_calls_total"],
            p["shared_reads"],
            p["shared_writes"],
            spread(&p["bytes_in"]),
            spread(&p["bytes_out"]),
            spread(&p["shared_bytes_in"]),
            spread(&p["shared_bytes_out"]),
            by_name.join(", "),
        ));
    }
    md
}
