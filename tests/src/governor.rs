//! A real `huntgate-governor` process for one test, serving a policy
//! directory the test edits while it runs.
//!
//! The governor listens on a free 127.0.0.1 port, logs into its temporary
//! directory, and is stopped when dropped (the tail of its log is printed
//! when the test panics).

use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::http::Client;
use crate::locate::governor_binary;
use crate::ports::free_port;
use crate::process::ChildGuard;
use huntgate_harness::governor::{serve_command, wait_ready, PolicyDir};

/// Bound on the governor loading its policies and answering `/readyz`.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Log lines printed when a test fails.
const LOG_TAIL_LINES: usize = 40;
/// Attempts at starting when a picked port was taken in the meantime.
const BIND_ATTEMPTS: usize = 3;

/// A policy directory (the harness's: `defaults.yaml` + `hunts/<hunt>.yaml`, written
/// atomically) in a temporary directory, which also holds the governor's log.
pub struct Policies {
    policies: PolicyDir,
    dir: TempDir,
}

impl Policies {
    /// A directory whose `defaults.yaml` is `defaults`.
    pub fn new(defaults: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("huntgate-e2e-governor-")
            .tempdir()
            .expect("create temporary directory");
        let policies = PolicyDir::create(dir.path().join("policies"), defaults)
            .unwrap_or_else(|e| panic!("write the policy directory: {e}"));
        Self { policies, dir }
    }

    /// The policy directory.
    pub fn path(&self) -> &Path {
        self.policies.path()
    }

    /// Writes (or replaces) `hunts/<hunt>.yaml`, atomically.
    pub fn set_hunt(&self, hunt: &str, yaml: &str) {
        self.policies
            .set_hunt(hunt, yaml)
            .unwrap_or_else(|e| panic!("write hunts/{hunt}.yaml: {e}"));
    }

    fn log_path(&self) -> PathBuf {
        // Beside the policies, not in them.
        self.dir.path().join("governor.log")
    }
}

/// A running governor.
pub struct Governor {
    process: ChildGuard,
    addr: SocketAddr,
    log: PathBuf,
}

impl Governor {
    /// Starts the governor on a free port and waits until it is ready (its
    /// policies loaded and evaluated once).
    pub fn start(policies: &Policies) -> Self {
        Self::start_with_args(policies, &[])
    }

    /// Like [`Governor::start`], with extra `serve` arguments (e.g.
    /// `--coordination URL`).
    pub fn start_with_args(policies: &Policies, args: &[&str]) -> Self {
        let mut attempt = 1;
        loop {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            match Self::start_on_with_args(policies, addr, args) {
                Ok(governor) => return governor,
                Err(log) if attempt < BIND_ATTEMPTS && log.contains("in use") => attempt += 1,
                Err(log) => panic!("the governor did not become ready on {addr}:\n{log}"),
            }
        }
    }

    /// Starts the governor on `addr` (e.g. again where a stopped one
    /// listened); the log on failure.
    pub fn start_on(policies: &Policies, addr: SocketAddr) -> Result<Self, String> {
        Self::start_on_with_args(policies, addr, &[])
    }

    /// [`Governor::start_on`] with extra `serve` arguments.
    pub fn start_on_with_args(
        policies: &Policies,
        addr: SocketAddr,
        args: &[&str],
    ) -> Result<Self, String> {
        let binary = governor_binary();
        let log_path = policies.log_path();
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open governor.log");
        let mut command = serve_command(&binary, policies.path(), addr, "info");
        command
            .args(args)
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
        let mut governor = Self {
            process: ChildGuard::new(format!("governor on {addr}"), child),
            addr,
            log: log_path,
        };
        match wait_ready(&mut governor.process, addr, START_TIMEOUT) {
            Ok(()) => Ok(governor),
            Err(why) => {
                governor.process.stop();
                Err(format!("{why}\n{}", governor.log()))
            }
        }
    }

    /// Where it listens (the Envoy cluster `governor` must point here).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The current throttle document (`GET /v1/throttle`).
    pub fn document(&self) -> Value {
        Client::new(self.addr).get("/v1/throttle", &[]).json()
    }

    /// The ratio the governor currently serves for `hunt`, if it lists it.
    pub fn ratio(&self, hunt: &str) -> Option<f64> {
        self.document()["hunts"][hunt]["ratio"].as_f64()
    }

    /// Stops the governor (SIGTERM, then SIGKILL) and waits for it to exit.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// The governor's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Governor {
    fn drop(&mut self) {
        self.process.stop();
        if thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let start = lines.len().saturating_sub(LOG_TAIL_LINES);
            eprintln!(
                "---- last {LOG_TAIL_LINES} lines of the {} log ----\n{}\n---- end of governor log ----",
                self.process.name(),
                lines.get(start..).unwrap_or_default().join("\n")
            );
        }
    }
}
