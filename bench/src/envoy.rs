//! Envoy processes of the bench: render `envoy/bench/bench.yaml`, start Envoy
//! (optionally under cachegrind), wait until it is ready, stop it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::filters::{clusters, route_action, Filters};
use crate::http;
use crate::process::{Checked as _, ChildGuard};
use huntgate_harness::ports::free_port;

/// How an Envoy is started.
#[derive(Debug, Clone)]
pub struct EnvoySpec {
    /// The filters in front of the router.
    pub filters: Filters,
    /// `--concurrency`.
    pub workers: u32,
    /// Port of a governor to add as cluster `governor`.
    pub governor_port: Option<u16>,
    /// Proxy every request to this loopback port (cluster `upstream`) instead of
    /// answering with a `direct_response`.
    pub upstream_port: Option<u16>,
    /// Write cachegrind counts here (runs Envoy under valgrind).
    pub cachegrind_out: Option<PathBuf>,
}

/// A running Envoy.
pub struct Envoy {
    /// Its process.
    pub child: ChildGuard,
    /// The bench listener.
    pub port: u16,
    /// The admin listener.
    pub admin_port: u16,
}

/// The Envoy binary (the harness's lookup: `$HUNTGATE_ENVOY`, the tool cache, `PATH`).
pub fn envoy_binary(root: &Path) -> Result<PathBuf> {
    huntgate_harness::envoy::envoy_binary(root).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Renders the bench config into `dir/name.yaml`.
pub fn render(
    root: &Path,
    dir: &Path,
    name: &str,
    spec: &EnvoySpec,
    port: u16,
    admin_port: u16,
) -> Result<PathBuf> {
    let template_path = root.join("envoy/bench/bench.yaml");
    let template = fs::read_to_string(&template_path)
        .with_context(|| format!("reading {}", template_path.display()))?;
    let filters = spec.filters.http_filters();
    let rendered = template
        .replace("@ADMIN_PORT@", &admin_port.to_string())
        .replace("@LISTEN_PORT@", &port.to_string())
        .replace("@RATE_LIMITS@", &spec.filters.rate_limits())
        .replace("@HTTP_FILTERS@\n", &filters)
        .replace("@ROUTE_ACTION@\n", &route_action(spec.upstream_port))
        .replace(
            "@CLUSTERS@",
            &clusters(spec.governor_port, spec.upstream_port),
        );
    let path = dir.join(format!("{name}.yaml"));
    fs::write(&path, rendered)?;
    Ok(path)
}

impl Envoy {
    /// Starts Envoy for `spec` and waits (up to `ready_within`) until its admin says ready.
    pub fn start(
        root: &Path,
        dir: &Path,
        name: &str,
        spec: &EnvoySpec,
        ready_within: Duration,
    ) -> Result<Self> {
        let port = free_port();
        let admin_port = free_port();
        let config = render(root, dir, name, spec, port, admin_port)?;
        let log = fs::File::create(dir.join(format!("{name}.log")))?;
        let binary = envoy_binary(root)?;
        let mut command = match &spec.cachegrind_out {
            Some(out) => {
                let mut c = Command::new("valgrind");
                c.arg("--tool=cachegrind")
                    .arg("--cache-sim=no")
                    .arg("--smc-check=all-non-file")
                    .arg(format!("--cachegrind-out-file={}", out.display()))
                    .arg(binary);
                c
            }
            None => Command::new(binary),
        };
        command
            .args(huntgate_harness::envoy::args(
                &config,
                spec.workers,
                "warning",
            ))
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = ChildGuard::spawn(name, &mut command)?;
        let mut envoy = Envoy {
            child,
            port,
            admin_port,
        };
        envoy.wait_ready(ready_within).with_context(|| {
            format!(
                "Envoy {name} not ready; see {}",
                dir.join(format!("{name}.log")).display()
            )
        })?;
        Ok(envoy)
    }

    fn wait_ready(&mut self, within: Duration) -> Result<()> {
        let admin = std::net::SocketAddr::from(([127, 0, 0, 1], self.admin_port));
        huntgate_harness::envoy::wait_ready(&mut self.child, admin, None, within)
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Waits until the process is idle (background V8 compilation finished): at
    /// most two clock ticks of CPU in each of two consecutive 500 ms windows.
    /// Returns false if it was still busy after `within` (e.g. a heavy timer).
    pub fn settle(&self, within: Duration) -> Result<bool> {
        let deadline = Instant::now() + within;
        let mut last = cpu_ticks(self.child.id())?;
        let mut quiet = 0;
        while quiet < 2 {
            if Instant::now() >= deadline {
                return Ok(false);
            }
            thread::sleep(Duration::from_millis(500));
            let now = cpu_ticks(self.child.id())?;
            quiet = if now.saturating_sub(last) <= 2 {
                quiet + 1
            } else {
                0
            };
            last = now;
        }
        Ok(true)
    }

    /// An admin GET, body as text.
    pub fn admin(&self, path: &str) -> Result<String> {
        let response = http::get_once(self.admin_port, path, &[])?;
        if response.status != 200 {
            bail!("admin {path}: status {}", response.status);
        }
        Ok(response.body)
    }

    /// The value of counter/gauge `name` in the admin `/stats` text (0 when absent).
    pub fn stat(&self, name: &str) -> Result<u64> {
        let body = self.admin("/stats")?;
        Ok(body
            .lines()
            .find_map(|line| {
                line.strip_prefix(name)?
                    .strip_prefix(": ")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0))
    }

    /// Stops Envoy (SIGTERM; valgrind writes its counts on exit).
    pub fn stop(mut self) -> Result<()> {
        self.child.stop_checked(Duration::from_secs(60))?;
        Ok(())
    }
}

/// User + system CPU clock ticks of process `pid` (from /proc/pid/stat).
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start at ") ".
    let rest = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest)
        .context("bad /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ") ".
    let utime: u64 = fields
        .get(11)
        .and_then(|f| f.parse().ok())
        .context("utime")?;
    let stime: u64 = fields
        .get(12)
        .and_then(|f| f.parse().ok())
        .context("stime")?;
    Ok(utime + stime)
}

/// Resident set size of process `pid`, bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .context("no VmRSS")
}
