//! Test harness: real Redis and tansu processes on free loopback ports, stopped by Drop
//! (also when a test fails), plus small helpers shared by the integration tests.
// Bounded polling of real processes uses the wall clock (never the control law).
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use huntgate_governor::policy::Policy;
use huntgate_governor::signal::SignalId;
use huntgate_governor::sources::{SignalSource, SourceError, SourceFactory};

pub use huntgate_harness::tools::which;
#[allow(unused_imports)] // used by some of the test crates that include this module
pub use huntgate_harness::{ports::free_port, process::ChildGuard};

/// Resolves a tool: `env` override, else `default`; fails the test with a clear message.
pub fn tool(env: &str, default: Option<PathBuf>, what: &str) -> PathBuf {
    huntgate_harness::tools::tool(env, default, what).unwrap_or_else(|e| panic!("{e}"))
}

/// Polls `f` every 50 ms until it returns Some, or fails after `limit`.
pub fn wait_until<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A real redis-server (the harness's), with the governor tests' own Redis tools.
pub struct RedisServer(huntgate_harness::redis::RedisServer);

impl std::ops::Deref for RedisServer {
    type Target = huntgate_harness::redis::RedisServer;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl RedisServer {
    /// Starts `redis-server` with `maxmemory` (e.g. "8mb") and no persistence.
    pub fn start(maxmemory: &str) -> Self {
        Self(huntgate_harness::redis::RedisServer::start(maxmemory))
    }

    /// The same on `port` (e.g. again where a killed one listened).
    pub fn start_on(port: u16, maxmemory: &str) -> Self {
        Self(huntgate_harness::redis::RedisServer::start_on(
            port, maxmemory,
        ))
    }

    /// Kills it at once (SIGKILL).
    pub fn kill(&mut self) {
        self.0.kill();
    }

    /// A synchronous connection.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url.as_str())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(2))
            .unwrap()
    }

    /// used_memory / maxmemory as the server reports it.
    pub fn memory_fraction(&self) -> f64 {
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query(&mut self.conn())
            .unwrap();
        huntgate_governor::sources::redis::memory_fraction(&info, None).unwrap()
    }

    /// Writes 64 KiB values until memory use exceeds `target` (bounded).
    pub fn fill_above(&self, target: f64) -> f64 {
        let mut conn = self.conn();
        let value = vec![b'x'; 64 * 1024];
        for i in 0..10_000 {
            let f = self.memory_fraction();
            if f > target {
                return f;
            }
            let _: () = redis::cmd("SET")
                .arg(format!("fill:{i}"))
                .arg(&value)
                .query(&mut conn)
                .unwrap_or_else(|e| panic!("SET failed at {f:.3} of maxmemory: {e}"));
        }
        panic!("could not fill Redis above {target}");
    }

    /// Deletes every key.
    pub fn flush(&self) {
        let _: () = redis::cmd("FLUSHALL")
            .arg("SYNC")
            .query(&mut self.conn())
            .unwrap();
    }
}

/// A real tansu broker (the harness's) with its storage in a temporary directory.
pub struct Tansu {
    broker: huntgate_harness::tansu::Tansu,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Tansu {
    type Target = huntgate_harness::tansu::Tansu;
    fn deref(&self) -> &Self::Target {
        &self.broker
    }
}

impl Tansu {
    /// Starts `tansu broker` on a free port and waits until it accepts connections.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let broker =
            huntgate_harness::tansu::Tansu::start(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        Self { broker, _dir: dir }
    }

    /// Kills the broker (SIGKILL).
    pub fn kill(&mut self) {
        self.broker.kill();
    }

    /// Starts the broker again on the same port and storage (after [`Self::kill`]).
    pub fn restart(&mut self) {
        self.broker.restart().unwrap_or_else(|e| panic!("{e}"));
    }
}

/// A factory for tests that feed readings by hand (`Governor::evaluate_with`).
pub struct NoSources;

struct Never;

impl SignalSource for Never {
    fn read(&self) -> huntgate_governor::sources::ReadFuture<'_> {
        Box::pin(async { Err(SourceError::Config("test source".into())) })
    }
}

impl SourceFactory for NoSources {
    fn build(&self, _: &SignalId, _: &Policy) -> Result<Arc<dyn SignalSource>, SourceError> {
        Ok(Arc::new(Never))
    }
}

/// Writes `text` to `dir/rel`, creating parent directories.
pub fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A minimal HTTP/1.1 GET over loopback: (status, headers, body).
pub fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(70))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw.as_str(), ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// `promtool check metrics` (Debian `prometheus`, installed by
/// scripts/install-governor-tools.sh) must accept the exposition.
pub fn promtool_check(text: &str) {
    use std::io::Write as _;
    let promtool = tool("HUNTGATE_PROMTOOL", which("promtool"), "promtool");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics failed:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
