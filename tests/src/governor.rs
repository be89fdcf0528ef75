//! A real `huntgate-governor` process for one test, serving a policy
//! directory the test edits while it runs.
//!
//! The governor listens on a free 127.0.0.1 port, logs into its temporary
//! directory, and is stopped when dropped (the tail of its log is printed
//! when the test panics).

use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::http::Client;
use crate::locate::governor_binary;
use crate::poll::{try_poll_until, POLL_INTERVAL};
use crate::ports::free_port;
use crate::process::ChildGuard;

/// Bound on the governor loading its policies and answering `/readyz`.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Log lines printed when a test fails.
const LOG_TAIL_LINES: usize = 40;
/// Attempts at starting when a picked port was taken in the meantime.
const BIND_ATTEMPTS: usize = 3;

/// A policy directory (`defaults.yaml` + `hunts/<hunt>.yaml`) in a
/// temporary directory, which also holds the governor's log.
pub struct Policies {
    dir: TempDir,
}

impl Policies {
    /// A directory whose `defaults.yaml` is `defaults`.
    pub fn new(defaults: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("huntgate-e2e-governor-")
            .tempdir()
            .expect("create temporary directory");
        fs::create_dir(dir.path().join("hunts")).expect("create hunts/");
        let policies = Self { dir };
        policies.write("defaults.yaml", defaults);
        policies
    }

    /// The policy directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes (or replaces) `hunts/<hunt>.yaml`, atomically: the governor
    /// ignores dot files, so a staged `.name` renamed into place is read
    /// whole or not at all.
    pub fn set_hunt(&self, hunt: &str, yaml: &str) {
        self.write(&format!("hunts/{hunt}.yaml"), yaml);
    }

    fn write(&self, relative: &str, content: &str) {
        let target = self.dir.path().join(relative);
        let name = target
            .file_name()
            .expect("policy file has a name")
            .to_string_lossy()
            .into_owned();
        let staged = target.with_file_name(format!(".{name}.staged"));
        fs::write(&staged, content).unwrap_or_else(|e| panic!("write {}: {e}", staged.display()));
        fs::rename(&staged, &target)
            .unwrap_or_else(|e| panic!("move {} into place: {e}", target.display()));
    }

    fn log_path(&self) -> PathBuf {
        // Beside the policies, not in them: the governor only reads
        // defaults.yaml and hunts/.
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
        let child = Command::new(&binary)
            .arg("serve")
            .arg("--policies")
            .arg(policies.path())
            .arg("--listen")
            .arg(addr.to_string())
            .args(args)
            .env("HUNTGATE_LOG", "info")
            .env_remove("HUNTGATE_COORDINATION")
            .env_remove("HUNTGATE_REDIS")
            .env_remove("HUNTGATE_KAFKA")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
        let mut governor = Self {
            process: ChildGuard::new(format!("governor on {addr}"), child),
            addr,
            log: log_path,
        };
        let ready = try_poll_until(START_TIMEOUT, POLL_INTERVAL, || {
            if governor.process.try_status().is_some() {
                return Some(false);
            }
            probe_status(addr, "/readyz")
                .map(|status| status == 200)
                .filter(|ready| *ready)
        })
        .unwrap_or(false);
        if ready {
            Ok(governor)
        } else {
            governor.process.stop();
            Err(governor.log())
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

/// The status of a GET that tolerates a not-yet-listening server.
fn probe_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    let response = agent.get(&format!("http://{addr}{path}")).call().ok()?;
    Some(response.status().as_u16())
}
