//! Fleet leases, control side: from a burst of joins on one replica to that
//! replica's raised share in force.
//!
//! Two Envoy processes (proxy ids `quiet` and `busy`, leases on, `safe_share: 0`)
//! share one hunt of fleet limit [`LIMIT`] through the governor. The quiet proxy
//! holds a few sessions (and so a small share: its sessions plus the headroom);
//! the busy one bursts: new hunters join every [`PACE`] on one connection until
//! one is rejected (its share is used up) and then until one is admitted again
//! (the share the governor raised at its next exchange is in force there). A
//! sample is the time between that first rejection and that admission. Between
//! samples the busy proxy is left quiet for a few exchanges, so its share has
//! shrunk back to its sessions plus the headroom.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};

use crate::control::{summary, Governor, Policies};
use crate::envoy::{Envoy, EnvoySpec};
use crate::filters::{Feed, Filters, LeaseFeed};
use crate::http::{self, Connection};
use crate::workload::HUNTER_HEADER;

/// Fleet limit of the hunt.
pub const LIMIT: u32 = 100;
/// Sessions the quiet proxy holds.
const QUIET_SESSIONS: u32 = 4;
/// Sessions the busy proxy holds before the first burst.
const BUSY_SESSIONS: u32 = 5;
/// Time between two joins of a burst.
const PACE: Duration = Duration::from_millis(5);
/// Longest a burst may wait for its raise.
const RAISE_TIMEOUT: Duration = Duration::from_secs(20);
/// Envoy workers per proxy (as in the control-path runs).
const WORKERS: u32 = 2;

fn proxy(
    root: &Path,
    dir: &Path,
    wasm: &Path,
    id: &str,
    poll_ms: u32,
    governor: &Governor,
) -> Result<Envoy> {
    let spec = EnvoySpec {
        filters: Filters::Huntgate {
            wasm: wasm.to_path_buf(),
            // Per-process default far above the fleet limit: only the lease holds the cap.
            max_hunters: 1000,
            max_tracked_hunts: 1024,
            listed_hunts: 0,
            feed: Some(Feed {
                poll_interval_ms: poll_ms,
                long_poll_s: 0,
                leases: Some(LeaseFeed {
                    proxy_id: id.to_string(),
                }),
            }),
        },
        workers: WORKERS,
        governor_port: Some(governor.port),
        upstream_port: None,
        cachegrind_out: None,
    };
    Envoy::start(
        root,
        dir,
        &format!("burst-{id}-{poll_ms}"),
        &spec,
        Duration::from_secs(60),
    )
}

/// A join by `hunter`; its status and, when rejected, the share it was rejected at.
fn join(connection: &mut Connection, hunter: &str) -> Result<(u16, Option<u64>)> {
    let response =
        connection.round_trip(&http::get("/hunts/h0/join", &[(HUNTER_HEADER, hunter)]))?;
    let limit = (response.status == 429)
        .then(|| serde_json::from_str::<Value>(&response.body).ok())
        .flatten()
        .and_then(|b| b.get("limit").and_then(Value::as_u64));
    Ok((response.status, limit))
}

/// Joins new hunters `prefix0..` until `count` are admitted (the first grants
/// come after the governor's learning period).
fn hold(connection: &mut Connection, prefix: &str, count: u32) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut admitted = 0;
    let mut i = 0;
    while admitted < count {
        if join(connection, &format!("{prefix}{i}"))?.0 == 200 {
            admitted += 1;
        }
        i += 1;
        if Instant::now() >= deadline {
            bail!("{prefix}: {admitted} of {count} sessions admitted within 60 s");
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A pseudo-random delay in [0, 1 s) (phases of the exchange).
fn jitter(i: u32) -> Duration {
    Duration::from_millis(u64::from(i.wrapping_mul(2_654_435_761) >> 22) % 1000)
}

/// `samples` bursts on the busy proxy with both proxies reporting every `poll_ms`.
pub fn burst_to_raise(
    root: &Path,
    dir: &Path,
    wasm: &Path,
    poll_ms: u32,
    samples: u32,
) -> Result<Value> {
    let policies = Policies::new(
        dir.join(format!("policies-burst-{poll_ms}")),
        "eval_period_s: 1\nttl_s: 10\nsignals: []\ngovern_unlisted: false\n",
    )?;
    policies.set_hunt("h0", &format!("max_hunters: {LIMIT}\npin_ratio: 1.0\n"))?;
    let governor = Governor::start(
        root,
        policies.path(),
        &dir.join(format!("governor-burst-{poll_ms}.log")),
        None,
    )?;
    let quiet = proxy(root, dir, wasm, "quiet", poll_ms, &governor)?;
    let busy = proxy(root, dir, wasm, "busy", poll_ms, &governor)?;
    let mut quiet_connection = Connection::open(quiet.port, Duration::from_secs(30))?;
    let mut connection = Connection::open(busy.port, Duration::from_secs(30))?;
    hold(&mut quiet_connection, "q", QUIET_SESSIONS)?;
    hold(&mut connection, "b", BUSY_SESSIONS)?;
    let mut delays = Vec::new();
    let mut rejected_per_burst = Vec::new();
    let mut shares_before = Vec::new();
    let mut next = 0u64;
    for s in 0..samples {
        // A few exchanges without demand: the busy share is back to sessions + headroom.
        thread::sleep(Duration::from_millis(u64::from(poll_ms) * 3) + jitter(s));
        let mut first_rejected: Option<(Instant, Option<u64>)> = None;
        let mut rejected = 0u32;
        let started = Instant::now();
        loop {
            next += 1;
            let (status, share) = join(&mut connection, &format!("burst{next}"))?;
            match (status, first_rejected) {
                (429, None) => {
                    first_rejected = Some((Instant::now(), share));
                    rejected += 1;
                }
                (429, Some(_)) => rejected += 1,
                (200, Some((t0, share))) => {
                    delays.push(t0.elapsed().as_secs_f64() * 1000.0);
                    rejected_per_burst.push(rejected);
                    shares_before.push(share.unwrap_or(0));
                    break;
                }
                (200, None) => {}
                (other, _) => bail!("burst join got {other}"),
            }
            if started.elapsed() > RAISE_TIMEOUT {
                bail!(
                    "burst {s}: no join admitted within {RAISE_TIMEOUT:?} (rejected {rejected}); fleet: {}",
                    http::get_once(governor.port, "/v1/fleet", &[])
                        .map(|r| r.body)
                        .unwrap_or_default()
                );
            }
            thread::sleep(PACE);
        }
    }
    let fleet = http::get_once(governor.port, "/v1/fleet", &[])?;
    drop(quiet_connection);
    drop(connection);
    quiet.stop()?;
    busy.stop()?;
    drop(governor);
    Ok(json!({
        "poll_interval_ms": poll_ms,
        "workers_per_proxy": WORKERS,
        "limit": LIMIT,
        "quiet_sessions": QUIET_SESSIONS,
        "join_every_ms": PACE.as_millis() as u64,
        "first_rejection_to_admission": summary(&delays),
        "rejected_per_burst": rejected_per_burst,
        "share_at_first_rejection": shares_before,
        "fleet_at_end": serde_json::from_str::<Value>(&fleet.body).unwrap_or(Value::Null),
    }))
}
