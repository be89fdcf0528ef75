//! Control-path speed: from a change at the governor (a `pin_ratio` edit, or a
//! Redis memory crossing) to the new limit being enforced on every Envoy worker.
//!
//! The hunt is kept full (10 hunters, limits below 10), so every probe — a join
//! by a new hunter — is rejected with a 429 whose body names the limit in force
//! on the worker that answered. One keep-alive probe connection is held per
//! worker (found with the per-worker listener stats).

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

use crate::envoy::{Envoy, EnvoySpec};
use crate::filters::{Feed, Filters};
use crate::http::{self, Connection};
use crate::process::{Checked as _, ChildGuard};
use crate::workload::{Requests, Scale, HUNTER_HEADER};
use huntgate_harness::governor::PolicyDir;
use huntgate_harness::ports::free_port;

/// Envoy workers of the control-path runs.
pub const WORKERS: u32 = 2;
/// Hunters joined before probing (the hunt stays full for every limit below this).
const ACTIVE: u32 = 10;
/// Time allowed for one change to land everywhere before the sample counts as lost.
const LAND_TIMEOUT: Duration = Duration::from_secs(20);

/// The governor binary: `$HUNTGATE_GOVERNOR`, else the release build, else the debug build.
pub fn governor_binary(root: &Path) -> Result<PathBuf> {
    huntgate_harness::governor::governor_binary(root, &["release", "debug"])
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// A running governor.
pub struct Governor {
    /// Its process.
    pub child: ChildGuard,
    /// Its HTTP port.
    pub port: u16,
}

impl Governor {
    /// Starts `huntgate-governor serve` on `policies` and waits for `/readyz`.
    pub fn start(root: &Path, policies: &Path, log: &Path, redis: Option<u16>) -> Result<Self> {
        Self::start_with(root, policies, log, redis, &[])
    }

    /// [`Governor::start`] with extra `serve` arguments.
    pub fn start_with(
        root: &Path,
        policies: &Path,
        log: &Path,
        redis: Option<u16>,
        extra: &[&str],
    ) -> Result<Self> {
        let port = free_port();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let log = fs::File::create(log)?;
        let mut command = huntgate_harness::governor::serve_command(
            &governor_binary(root)?,
            policies,
            addr,
            "warn",
        );
        command.args(extra).stdout(log.try_clone()?).stderr(log);
        if let Some(redis) = redis {
            command
                .arg("--redis")
                .arg(format!("main=redis://127.0.0.1:{redis}"));
        }
        let mut child = ChildGuard::spawn("huntgate-governor", &mut command)?;
        huntgate_harness::governor::wait_ready(&mut child, addr, Duration::from_secs(60))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Self { child, port })
    }
}

/// A policy directory (the harness's), with the bench's error style.
pub struct Policies(PolicyDir);

impl Policies {
    /// `dir` with `defaults.yaml` = `defaults` and an empty `hunts/`.
    pub fn new(dir: PathBuf, defaults: &str) -> Result<Self> {
        Ok(Self(PolicyDir::create(dir, defaults)?))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// Atomically writes `hunts/<hunt>.yaml` (staged as a dot file, renamed into place).
    pub fn set_hunt(&self, hunt: &str, yaml: &str) -> Result<()> {
        Ok(self.0.set_hunt(hunt, yaml)?)
    }
}

/// One keep-alive probe connection per Envoy worker.
pub struct Probes {
    connections: Vec<Connection>,
    next_hunter: u64,
}

/// Per-worker `downstream_cx_total` of the bench listener.
fn per_worker_connections(envoy: &Envoy) -> Result<Vec<u64>> {
    let stats = envoy.admin("/stats")?;
    let prefix = format!("listener.127.0.0.1_{}.worker_", envoy.port);
    let mut counts = vec![0u64; WORKERS as usize];
    for line in stats.lines() {
        let Some(rest) = line.strip_prefix(&prefix) else {
            continue;
        };
        let Some((worker, value)) = rest.split_once(".downstream_cx_total: ") else {
            continue;
        };
        if let (Ok(worker), Ok(value)) = (worker.parse::<usize>(), value.trim().parse::<u64>()) {
            if let Some(slot) = counts.get_mut(worker) {
                *slot = value;
            }
        }
    }
    Ok(counts)
}

impl Probes {
    /// Opens connections until one is held on every worker.
    pub fn connect(envoy: &Envoy) -> Result<Self> {
        let mut held: Vec<Option<Connection>> = (0..WORKERS).map(|_| None).collect();
        let mut probes = Self {
            connections: Vec::new(),
            next_hunter: 0,
        };
        for _attempt in 0..64 {
            if held.iter().all(Option::is_some) {
                break;
            }
            let before = per_worker_connections(envoy)?;
            let mut connection = Connection::open(envoy.port, Duration::from_secs(30))?;
            probes.probe(&mut connection)?;
            let after = per_worker_connections(envoy)?;
            let worker = before
                .iter()
                .zip(&after)
                .position(|(b, a)| a > b)
                .context("no worker accepted the probe connection")?;
            if let Some(slot @ None) = held.get_mut(worker) {
                *slot = Some(connection);
            }
        }
        probes.connections = held
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .context("could not place a connection on every worker")?;
        Ok(probes)
    }

    /// A join by a new hunter; the limit the answering worker enforces, if it rejected.
    fn probe(&mut self, connection: &mut Connection) -> Result<Option<u32>> {
        self.next_hunter += 1;
        let request = http::get(
            "/hunts/h0/join",
            &[(HUNTER_HEADER, &format!("probe{}", self.next_hunter))],
        );
        let response = connection.round_trip(&request)?;
        if response.status != 429 {
            return Ok(None);
        }
        let body: Value = serde_json::from_str(&response.body)?;
        Ok(body
            .get("limit")
            .and_then(Value::as_u64)
            .and_then(|l| u32::try_from(l).ok()))
    }

    /// Probes every worker until all enforce `limit`; per-worker delay from `t0`.
    pub fn wait_for(&mut self, limit: u32, t0: Instant) -> Result<Vec<Duration>> {
        let mut seen: Vec<Option<Duration>> = vec![None; self.connections.len()];
        let mut connections = std::mem::take(&mut self.connections);
        let result = (|| {
            while seen.iter().any(Option::is_none) {
                if t0.elapsed() > LAND_TIMEOUT {
                    bail!("limit {limit} not enforced on every worker within {LAND_TIMEOUT:?}");
                }
                for (connection, seen) in connections.iter_mut().zip(seen.iter_mut()) {
                    if seen.is_none() && self.probe(connection)? == Some(limit) {
                        *seen = Some(t0.elapsed());
                    }
                }
                thread::sleep(Duration::from_millis(2));
            }
            Ok(seen.iter().map(|s| s.unwrap_or_default()).collect())
        })();
        self.connections = connections;
        result
    }
}

/// A pseudo-random delay in [0, 1 s), so changes land at every phase of the
/// governor's reload and the filter's poll.
fn jitter() -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    Duration::from_millis(u64::from(nanos.wrapping_mul(2_654_435_761) % 1000))
}

/// Distribution summary of samples in milliseconds.
pub fn summary(samples_ms: &[f64]) -> Value {
    let mut sorted = samples_ms.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| -> f64 {
        if sorted.is_empty() {
            return f64::NAN;
        }
        let at = ((sorted.len() as f64 - 1.0) * q).round() as usize;
        sorted.get(at).copied().unwrap_or(f64::NAN)
    };
    json!({
        "n": sorted.len(),
        "min_ms": pick(0.0).round(),
        "p50_ms": pick(0.5).round(),
        "p90_ms": pick(0.9).round(),
        "p99_ms": pick(0.99).round(),
        "max_ms": pick(1.0).round(),
        "samples_ms": sorted.iter().map(|s| s.round()).collect::<Vec<_>>(),
    })
}

fn feed(long_poll_s: u32) -> Feed {
    Feed {
        poll_interval_ms: 1000,
        long_poll_s,
        leases: None,
    }
}

fn start_envoy(
    root: &Path,
    dir: &Path,
    name: &str,
    wasm: &Path,
    max_hunters: u32,
    long_poll_s: u32,
    governor: &Governor,
) -> Result<(Envoy, Probes)> {
    let spec = EnvoySpec {
        filters: Filters::Huntgate {
            wasm: wasm.to_path_buf(),
            max_hunters,
            max_tracked_hunts: 1024,
            listed_hunts: 0,
            feed: Some(feed(long_poll_s)),
        },
        workers: WORKERS,
        governor_port: Some(governor.port),
        upstream_port: None,
        cachegrind_out: None,
    };
    let envoy = Envoy::start(root, dir, name, &spec, Duration::from_secs(60))?;
    let requests = Requests::new(Scale {
        hunts: 1,
        active_hunts: 1,
        hunters: ACTIVE,
    })?;
    let mut connection = Connection::open(envoy.port, Duration::from_secs(30))?;
    requests.prefill(&mut connection)?;
    let probes = Probes::connect(&envoy)?;
    Ok((envoy, probes))
}

/// Policy edit → enforced on every worker, `samples` times; `long_poll_s` 0 = polling.
pub fn pin_ratio_latency(
    root: &Path,
    dir: &Path,
    wasm: &Path,
    long_poll_s: u32,
    samples: u32,
) -> Result<Value> {
    let mode = if long_poll_s == 0 {
        "poll"
    } else {
        "long-poll"
    };
    let policies = Policies::new(
        dir.join(format!("policies-{mode}")),
        "eval_period_s: 5\nmax_hunters: 1000\ngovern_unlisted: false\n",
    )?;
    policies.set_hunt("h0", "max_hunters: 1000\npin_ratio: 0.005\n")?;
    let governor = Governor::start(
        root,
        policies.path(),
        &dir.join(format!("governor-{mode}.log")),
        None,
    )?;
    let (envoy, mut probes) = start_envoy(
        root,
        dir,
        &format!("control-{mode}"),
        wasm,
        1000,
        long_poll_s,
        &governor,
    )?;
    probes.wait_for(5, Instant::now())?;
    let mut all_workers = Vec::new();
    let mut per_worker = Vec::new();
    for i in 0..samples {
        let (ratio, limit) = if i % 2 == 0 {
            ("0.008", 8)
        } else {
            ("0.005", 5)
        };
        thread::sleep(jitter());
        policies.set_hunt("h0", &format!("max_hunters: 1000\npin_ratio: {ratio}\n"))?;
        let t0 = Instant::now();
        let delays = probes.wait_for(limit, t0)?;
        let ms: Vec<f64> = delays.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        all_workers.push(ms.iter().copied().fold(0.0, f64::max));
        per_worker.extend(ms);
    }
    envoy.stop()?;
    drop(governor);
    Ok(json!({
        "mode": mode,
        "workers": WORKERS,
        "every_worker": summary(&all_workers),
        "per_worker": summary(&per_worker),
    }))
}

/// A redis-server with `maxmemory`.
struct Redis {
    child: ChildGuard,
    port: u16,
}

impl Redis {
    fn start(dir: &Path, maxmemory: u64) -> Result<Self> {
        let port = free_port();
        let log = fs::File::create(dir.join("redis.log"))?;
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--maxmemory", &maxmemory.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut redis = Self {
            child: ChildGuard::spawn("redis-server", &mut command)?,
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis.command(&["PING"]).is_err() {
            redis.child.check_running()?;
            if Instant::now() >= deadline {
                bail!("redis-server not up within 10 s");
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(redis)
    }

    /// Sends one command (RESP) and returns the raw reply's first line.
    fn command(&self, args: &[&str]) -> Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        stream.write_all(&request)?;
        let mut reply = vec![0u8; 65536];
        let n = stream.read(&mut reply)?;
        Ok(String::from_utf8_lossy(reply.get(..n).unwrap_or_default()).into_owned())
    }

    fn used_memory(&self) -> Result<u64> {
        let info = self.command(&["INFO", "memory"])?;
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .context("no used_memory in INFO")
    }
}

/// Redis memory crossing 80 % → a lower limit enforced on every worker (long-poll mode).
pub fn redis_crossing_latency(root: &Path, dir: &Path, wasm: &Path, samples: u32) -> Result<Value> {
    const MAXMEMORY: u64 = 64 << 20;
    let redis = Redis::start(dir, MAXMEMORY)?;
    let policies = Policies::new(
        dir.join("policies-redis"),
        "eval_period_s: 1\nstale_after_s: 15\nread_timeout_ms: 500\nmax_hunters: 10\nsignals: [redis:main]\n\
         redis:\n  main:\n    url: redis://127.0.0.1:1\n\
         control:\n  cut_step: 0.10\n  cut_interval_s: 0\n  recover_step: 0.10\n  recover_interval_s: 0\n  \
         stable_period_s: 0\n  redis_memory_high: 0.80\n  redis_memory_low: 0.70\n",
    )?;
    policies.set_hunt("h0", "max_hunters: 10\n")?;
    let governor = Governor::start(
        root,
        policies.path(),
        &dir.join("governor-redis.log"),
        Some(redis.port),
    )?;
    let (envoy, mut probes) = start_envoy(root, dir, "control-redis", wasm, 10, 25, &governor)?;
    probes.wait_for(10, Instant::now())?;
    // 1 MiB values (one big one would be refused: its query buffer alone
    // would pass maxmemory), the last one crossing 80 %.
    let chunk = "x".repeat(1 << 20);
    let mut delays = Vec::new();
    for _ in 0..samples {
        thread::sleep(jitter());
        let mut keys = 0u32;
        while (redis.used_memory()? as f64) < MAXMEMORY as f64 * 0.80 {
            if keys >= 64 {
                bail!("Redis used_memory did not cross 80 % of {MAXMEMORY}");
            }
            let reply = redis.command(&["SET", &format!("bench-fill-{keys}"), &chunk])?;
            if !reply.starts_with("+OK") {
                bail!("Redis SET refused: {reply}");
            }
            keys += 1;
        }
        let t0 = Instant::now();
        let ms = probes.wait_for(9, t0)?;
        delays.push(
            ms.iter()
                .map(|d| d.as_secs_f64() * 1000.0)
                .fold(0.0, f64::max),
        );
        for key in 0..keys {
            redis.command(&["DEL", &format!("bench-fill-{key}")])?;
        }
        probes.wait_for(10, Instant::now())?;
    }
    envoy.stop()?;
    drop(governor);
    drop(redis);
    Ok(json!({
        "mode": "long-poll",
        "eval_period_s": 1,
        "every_worker": summary(&delays),
    }))
}
