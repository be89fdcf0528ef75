//! A real `redis-server` (Debian's, or `$HUNTGATE_REDIS_SERVER`) on a
//! loopback port for one test: no persistence, `noeviction`, stopped when
//! dropped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::locate::redis_server_binary;
use crate::poll::{try_poll_until, POLL_INTERVAL};
use crate::ports::free_port;
use crate::process::ChildGuard;

/// Bound on redis-server answering PING after its start.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running redis-server.
pub struct Redis {
    process: ChildGuard,
    port: u16,
    _dir: TempDir,
}

impl Redis {
    /// Starts one on a free port.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts one on `port` (e.g. again where a stopped one listened), empty.
    pub fn start_on(port: u16) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("huntgate-e2e-redis-")
            .tempdir()
            .expect("create temporary directory");
        let child = Command::new(redis_server_binary())
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--maxmemory", "64mb", "--maxmemory-policy", "noeviction"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let redis = Self {
            process: ChildGuard::new(format!("redis-server on {port}"), child),
            port,
            _dir: dir,
        };
        let addr = redis.addr();
        try_poll_until(START_TIMEOUT, POLL_INTERVAL, || ping(addr).then_some(()))
            .unwrap_or_else(|| panic!("redis-server on {addr} did not answer PING"));
        redis
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr())
    }

    /// Stops it (SIGTERM, then SIGKILL) and waits for it to exit.
    pub fn stop(&mut self) {
        self.process.stop();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.process.stop();
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
