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

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use huntgate_governor::policy::Policy;
use huntgate_governor::signal::SignalId;
use huntgate_governor::sources::{SignalSource, SourceError, SourceFactory};

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Finds an executable on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Resolves a tool: `env` override, else `default`; fails the test with a clear message.
pub fn tool(env: &str, default: Option<PathBuf>, what: &str) -> PathBuf {
    let path = std::env::var_os(env).map(PathBuf::from).or(default);
    match path {
        Some(p) if p.is_file() => p,
        other => panic!(
            "{what} not found (looked at {other:?}): run scripts/install-governor-tools.sh or set {env}"
        ),
    }
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

/// A child process killed and reaped on drop.
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
}

impl ChildGuard {
    /// Wraps a spawned child.
    pub fn new(name: &str, child: Child) -> Self {
        Self {
            name: name.to_string(),
            child: Some(child),
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills (SIGKILL) and reaps the child.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Takes the child out of the guard's care (the caller must reap it).
    pub fn take(&mut self) -> Option<Child> {
        self.child.take()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.child.is_some() {
            eprintln!("stopping {}", self.name);
        }
        self.kill();
    }
}

/// A real redis-server on a free loopback port.
pub struct RedisServer {
    pub port: u16,
    pub url: String,
    guard: ChildGuard,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts `redis-server` with `maxmemory` (e.g. "8mb") and no persistence.
    pub fn start(maxmemory: &str) -> Self {
        Self::start_on(free_port(), maxmemory)
    }

    /// The same on `port` (e.g. again where a killed one listened).
    pub fn start_on(port: u16, maxmemory: &str) -> Self {
        let bin = tool(
            "HUNTGATE_REDIS_SERVER",
            which("redis-server"),
            "redis-server",
        );
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--maxmemory", maxmemory, "--maxmemory-policy", "noeviction"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let url = format!("redis://127.0.0.1:{port}");
        let server = Self {
            port,
            url: url.clone(),
            guard: ChildGuard::new(&format!("redis-server :{port}"), child),
            _dir: dir,
        };
        let client = redis::Client::open(url.as_str()).unwrap();
        wait_until(
            Duration::from_secs(10),
            "redis-server to answer PING",
            || {
                let mut c = client
                    .get_connection_with_timeout(Duration::from_millis(200))
                    .ok()?;
                redis::cmd("PING").query::<String>(&mut c).ok()
            },
        );
        server
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

    /// Kills the server (SIGKILL).
    pub fn kill(&mut self) {
        self.guard.kill();
    }
}

/// A real tansu broker (sqlite storage) on a free loopback port.
pub struct Tansu {
    pub port: u16,
    pub brokers: String,
    guard: ChildGuard,
    _dir: tempfile::TempDir,
}

impl Tansu {
    /// Starts `tansu broker` and waits until it accepts connections.
    pub fn start() -> Self {
        let default = std::env::var_os("HOME")
            .map(|h| Path::new(&h).join(".cache/huntgate/tansu/bin/tansu"))
            .filter(|p| p.is_file())
            .or_else(|| which("tansu"));
        let bin = tool("HUNTGATE_TANSU", default, "tansu");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("tansu.log")).unwrap();
        let child = Command::new(bin)
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            // The sqlite path is relative to the working directory (the temp dir).
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(dir.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn tansu");
        let mut guard = ChildGuard::new(&format!("tansu :{port}"), child);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log_path = dir.path().join("tansu.log");
        wait_until(Duration::from_secs(30), "tansu to listen", || {
            if !guard.is_running() {
                panic!(
                    "tansu exited at start-up: {}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
        });
        Self {
            port,
            brokers: format!("127.0.0.1:{port}"),
            guard,
            _dir: dir,
        }
    }

    /// Kills the broker (SIGKILL).
    pub fn kill(&mut self) {
        self.guard.kill();
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
