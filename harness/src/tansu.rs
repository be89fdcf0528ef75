//! A real tansu Kafka broker (`$HUNTGATE_TANSU`, else the tool cache's build, else `tansu`
//! on `PATH`) on a loopback port, sqlite storage in a directory of its own, logging to
//! `tansu.log` there; ready once it accepts connections. It can be killed and started
//! again on the same port and storage (a broker outage and its return).

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::ports::free_port;
use crate::process::{self, ChildGuard};
use crate::tools::{cached, tool, which};

/// Bound on the broker accepting connections after its start.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The tansu binary.
pub fn tansu_binary() -> Result<PathBuf, String> {
    tool(
        "HUNTGATE_TANSU",
        cached("tansu/bin/tansu").or_else(|| which("tansu")),
        "tansu",
    )
}

/// A running broker.
pub struct Tansu {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// `127.0.0.1:PORT`, for Kafka clients' `bootstrap.servers`.
    pub brokers: String,
    dir: PathBuf,
    guard: ChildGuard,
}

impl Tansu {
    /// Starts one on a free port with its storage and log in `dir` (created if missing).
    pub fn start(dir: &Path) -> Result<Self, String> {
        Self::start_on(free_port(), dir)
    }

    /// Starts one on `port` with its storage and log in `dir`.
    pub fn start_on(port: u16, dir: &Path) -> Result<Self, String> {
        let bin = tansu_binary()?;
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let log_path = dir.join("tansu.log");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("{}: {e}", log_path.display()))?;
        let err_log = log.try_clone().map_err(|e| e.to_string())?;
        let url = format!("tcp://127.0.0.1:{port}");
        let mut command = Command::new(bin);
        command
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            // The sqlite path is relative to the working directory.
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log);
        let guard = ChildGuard::spawn(format!("tansu on {port}"), &mut command)
            .map_err(|e| e.to_string())?;
        let mut broker = Self {
            port,
            brokers: format!("127.0.0.1:{port}"),
            dir: dir.to_path_buf(),
            guard,
        };
        broker.wait_listening()?;
        Ok(broker)
    }

    fn wait_listening(&mut self) -> Result<(), String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        process::wait_ready(&mut self.guard, START_TIMEOUT, || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        })
        .map_err(|e| format!("{e}; log:\n{}", self.log()))
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("tansu.log")).unwrap_or_default()
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        self.guard.is_running()
    }

    /// Kills the broker (SIGKILL).
    pub fn kill(&mut self) {
        self.guard.kill();
    }

    /// Starts the broker again on the same port and storage (after [`Self::kill`]).
    pub fn restart(&mut self) -> Result<(), String> {
        self.guard.stop();
        *self = Self::start_on(self.port, &self.dir)?;
        Ok(())
    }
}
