//! Footprint: wasm sizes, Envoy RSS with and without the filter (per worker),
//! shared-data bytes per hunt from the store layout and as measured RSS growth.

use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use huntgate_core::store::{shards_for, slot_bytes, COUNT_BYTES, RECORD_BYTES, SHARD_TAG_BYTES};
use serde_json::{json, Value};

use crate::envoy::{rss_bytes, Envoy, EnvoySpec};
use crate::filters::Filters;
use crate::http::Connection;
use crate::workload::{Requests, Scale};

fn mib(bytes: u64) -> f64 {
    (bytes as f64 / 1048576.0 * 10.0).round() / 10.0
}

/// RSS of an idle Envoy with `filters` and `workers` workers, after one request.
fn envoy_rss(root: &Path, dir: &Path, filters: &Filters, workers: u32) -> Result<u64> {
    let name = format!("rss-{}-{workers}", filters.label());
    let spec = EnvoySpec {
        filters: filters.clone(),
        workers,
        governor_port: None,
        upstream_port: None,
        cachegrind_out: None,
    };
    let envoy = Envoy::start(root, dir, &name, &spec, Duration::from_secs(60))?;
    envoy.settle(Duration::from_secs(60))?;
    let rss = rss_bytes(envoy.child.id())?;
    envoy.stop()?;
    Ok(rss)
}

/// Envoy RSS growth from `hunters` joins into one hunt (shared data as really stored).
fn measured_bytes_per_hunter(root: &Path, dir: &Path, wasm: &Path, hunters: u32) -> Result<f64> {
    let spec = EnvoySpec {
        filters: Filters::Huntgate {
            wasm: wasm.to_path_buf(),
            max_hunters: 10_000_000,
            max_tracked_hunts: 1024,
            listed_hunts: 0,
            feed: None,
        },
        workers: 1,
        governor_port: None,
        upstream_port: None,
        cachegrind_out: None,
    };
    let envoy = Envoy::start(root, dir, "rss-hunters", &spec, Duration::from_secs(60))?;
    envoy.settle(Duration::from_secs(60))?;
    let before = rss_bytes(envoy.child.id())?;
    let requests = Requests::new(Scale {
        hunts: 1,
        active_hunts: 1,
        hunters,
    })?;
    let mut connection = Connection::open(envoy.port, Duration::from_secs(30))?;
    requests.prefill(&mut connection)?;
    drop(connection);
    let after = rss_bytes(envoy.child.id())?;
    envoy.stop()?;
    Ok((after.saturating_sub(before)) as f64 / f64::from(hunters))
}

/// Reads one unsigned LEB128 number at `*at`, moving past it.
fn leb128(bytes: &[u8], at: &mut usize) -> Result<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at).context("wasm: truncated number")?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    bail!("wasm: number longer than 64 bits")
}

/// The largest function body of the module at `wasm`, in bytes. V8 compiles
/// every function with TurboFan when Envoy loads the module, and Envoy's
/// allocator keeps the peak of that compilation as RSS: it follows the largest
/// functions (README, "Memory").
fn largest_function_bytes(wasm: &Path) -> Result<u64> {
    let bytes = fs::read(wasm)?;
    let mut at = 8; // magic and version
    while at < bytes.len() {
        let id = *bytes.get(at).context("wasm: truncated section")?;
        at += 1;
        let size = usize::try_from(leb128(&bytes, &mut at)?)?;
        let end = at.checked_add(size).context("wasm: section size")?;
        if id == CODE_SECTION {
            let mut body = at;
            let mut largest = 0;
            for _ in 0..leb128(&bytes, &mut body)? {
                let length = leb128(&bytes, &mut body)?;
                largest = largest.max(length);
                body = body
                    .checked_add(usize::try_from(length)?)
                    .filter(|&b| b <= end)
                    .context("wasm: function body past its section")?;
            }
            return Ok(largest);
        }
        at = end;
    }
    bail!("{}: no code section", wasm.display())
}

/// The wasm code section's id.
const CODE_SECTION: u8 = 10;

/// The module's own figures: its size and its largest function (the smoke run
/// reports only these; [`measure`] adds Envoy's RSS and the layout).
pub fn module(wasm: &Path) -> Result<Value> {
    let wasm_bytes = fs::metadata(wasm)?.len();
    Ok(json!({
        "wasm_bytes": wasm_bytes,
        "wasm_kib": (wasm_bytes as f64 / 1024.0 * 10.0).round() / 10.0,
        "largest_function_bytes": largest_function_bytes(wasm)?,
    }))
}

/// All footprint figures.
pub fn measure(root: &Path, dir: &Path, wasm: &Path, empty: &Path) -> Result<Value> {
    let empty_bytes = fs::metadata(empty)?.len();
    let huntgate = Filters::Huntgate {
        wasm: wasm.to_path_buf(),
        max_hunters: 2000,
        max_tracked_hunts: 1024,
        listed_hunts: 0,
        feed: None,
    };
    let bare1 = envoy_rss(root, dir, &Filters::Bare, 1)?;
    let bare2 = envoy_rss(root, dir, &Filters::Bare, 2)?;
    let hg1 = envoy_rss(root, dir, &huntgate, 1)?;
    let hg2 = envoy_rss(root, dir, &huntgate, 2)?;
    // What V8 itself costs: the SDK's empty filter at 2 workers.
    let empty2 = envoy_rss(root, dir, &Filters::EmptyWasm(empty.to_path_buf()), 2)?;
    let per_hunter = measured_bytes_per_hunter(root, dir, wasm, 50_000)?;
    // The default max_tracked_hunts (1,024) lays out this many shards per slot.
    let shards = shards_for(1_024);
    // A slot's keys: its count and its shards.
    let keys_per_slot = 1 + shards;
    let layout: Vec<Value> = [0u32, 10, 2_000, 50_000]
        .iter()
        .map(|&active| {
            json!({
                "active_hunters": active,
                "value_bytes": slot_bytes(active, shards),
                "keys": keys_per_slot,
                // The count and the hunter's shard, read and written.
                "bytes_copied_per_admitted_join": 2 * (COUNT_BYTES + SHARD_TAG_BYTES + RECORD_BYTES * active as usize / shards as usize),
            })
        })
        .collect();
    let mut figures = json!({
        "empty_filter_wasm_bytes": empty_bytes,
        "envoy_rss_mib": {
            "bare_1_worker": mib(bare1),
            "bare_2_workers": mib(bare2),
            "huntgate_1_worker": mib(hg1),
            "huntgate_2_workers": mib(hg2),
            "empty_wasm_2_workers": mib(empty2),
        },
        "empty_wasm_extra_mib_2_workers": mib(empty2.saturating_sub(bare2)),
        "huntgate_extra_mib_2_workers": mib(hg2.saturating_sub(bare2)),
        "huntgate_extra_mib_per_worker_vm": mib((hg2.saturating_sub(bare2)).saturating_sub(hg1.saturating_sub(bare1))),
        "shared_data_layout_per_hunt": layout,
        "count_bytes": COUNT_BYTES,
        "record_bytes": RECORD_BYTES,
        "shards_per_slot": shards,
        "keys_per_slot": keys_per_slot,
        "measured_rss_bytes_per_hunter_at_50000": per_hunter.round(),
        "max_tracked_hunts_prepared": 1024,
    });
    if let (Some(all), Value::Object(own)) = (figures.as_object_mut(), module(wasm)?) {
        all.extend(own);
    }
    Ok(figures)
}
