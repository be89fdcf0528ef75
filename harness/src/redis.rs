//! A real `redis-server` (`$HUNTGATE_REDIS_SERVER`, else Debian's on `PATH`) on a loopback
//! port: no persistence, `noeviction`, its own temporary directory, stopped when dropped.
//! Ready once it answers `PING`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::ports::free_port;
use crate::process::ChildGuard;
use crate::tools::{tool, which};

/// Bound on redis-server answering PING after its start.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running redis-server.
pub struct RedisServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// `redis://127.0.0.1:PORT`.
    pub url: String,
    guard: ChildGuard,
    dir: PathBuf,
}

/// The redis-server binary.
pub fn redis_server_binary() -> Result<PathBuf, String> {
    tool(
        "HUNTGATE_REDIS_SERVER",
        which("redis-server"),
        "redis-server",
    )
}

impl RedisServer {
    /// Starts one on a free port with `maxmemory` (e.g. "8mb").
    pub fn start(maxmemory: &str) -> Self {
        Self::start_on(free_port(), maxmemory)
    }

    /// Starts one on `port` (e.g. again where a stopped one listened), empty.
    #[allow(clippy::panic)] // a harness that cannot start its server fails the test at once
    pub fn start_on(port: u16, maxmemory: &str) -> Self {
        Self::try_start_on(port, maxmemory).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Self::start_on`] that says why it could not start instead of panicking.
    pub fn try_start_on(port: u16, maxmemory: &str) -> Result<Self, String> {
        let bin = redis_server_binary()?;
        let dir =
            std::env::temp_dir().join(format!("huntgate-redis-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let child = Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--maxmemory", maxmemory, "--maxmemory-policy", "noeviction"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn redis-server: {e}"))?;
        let server = Self {
            port,
            url: format!("redis://127.0.0.1:{port}"),
            guard: ChildGuard::new(format!("redis-server on {port}"), child),
            dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while !ping(server.addr()) {
            if Instant::now() >= deadline {
                return Err(format!(
                    "redis-server on {} did not answer PING",
                    server.addr()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Stops it (SIGTERM, then SIGKILL) and waits for it to exit.
    pub fn stop(&mut self) {
        self.guard.stop();
    }

    /// Kills it at once (SIGKILL).
    pub fn kill(&mut self) {
        self.guard.kill();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.guard.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether a server on `addr` answers `PING` with `+PONG`.
fn ping(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}
