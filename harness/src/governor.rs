//! The governor as the tests, the bench and the demo run it: the binary from
//! `$HUNTGATE_GOVERNOR` or the workspace's build, a policy directory written atomically
//! while it runs, `serve` on a loopback address with no Redis, Kafka or coordination taken
//! from the environment, ready once `/readyz` answers 200.

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::http1;
use crate::process::{self, ChildGuard};
use crate::tools::tool_from;

/// The governor binary: `$HUNTGATE_GOVERNOR` (a relative path taken from `root`), else
/// the first of `builds` (e.g. `["release", "debug"]`) built under `root/target`.
pub fn governor_binary(root: &Path, builds: &[&str]) -> Result<PathBuf, String> {
    let built = builds
        .iter()
        .map(|build| root.join("target").join(build).join("huntgate-governor"))
        .find(|p| p.is_file());
    tool_from(
        "HUNTGATE_GOVERNOR",
        root,
        built,
        "huntgate-governor (cargo build -p huntgate-governor)",
    )
}

/// A policy directory: `defaults.yaml` and `hunts/<hunt>.yaml`.
#[derive(Debug)]
pub struct PolicyDir {
    dir: PathBuf,
}

impl PolicyDir {
    /// Makes `dir` (emptied first) a policy directory whose `defaults.yaml` is `defaults`.
    pub fn create(dir: PathBuf, defaults: &str) -> io::Result<Self> {
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("hunts"))?;
        let policies = Self { dir };
        policies.write("defaults.yaml", defaults)?;
        Ok(policies)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes (or replaces) `hunts/<hunt>.yaml`.
    pub fn set_hunt(&self, hunt: &str, yaml: &str) -> io::Result<()> {
        self.write(&format!("hunts/{hunt}.yaml"), yaml)
    }

    /// Writes `relative` atomically: the governor ignores dot files, so a staged `.name`
    /// renamed into place is read whole or not at all.
    pub fn write(&self, relative: &str, content: &str) -> io::Result<()> {
        let target = self.dir.join(relative);
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let staged = target.with_file_name(format!(".{name}.staged"));
        fs::write(&staged, content)?;
        fs::rename(&staged, &target)
    }
}

/// `binary serve --policies policies --listen listen` logging at `log_level`, without the
/// Redis, Kafka and coordination settings of the caller's environment; stdin closed. The
/// caller adds its own arguments and output.
pub fn serve_command(
    binary: &Path,
    policies: &Path,
    listen: SocketAddr,
    log_level: &str,
) -> Command {
    let mut command = Command::new(binary);
    command
        .arg("serve")
        .arg("--policies")
        .arg(policies)
        .arg("--listen")
        .arg(listen.to_string())
        .env("HUNTGATE_LOG", log_level)
        .env_remove("HUNTGATE_COORDINATION")
        .env_remove("HUNTGATE_REDIS")
        .env_remove("HUNTGATE_KAFKA")
        .stdin(Stdio::null());
    command
}

/// Whether the governor at `addr` answers `/readyz` with 200 (policies loaded and
/// evaluated once).
pub fn is_ready(addr: SocketAddr) -> bool {
    http1::get(addr, "/readyz", Duration::from_secs(2)).is_ok_and(|r| r.status == 200)
}

/// Waits until `governor` at `addr` is ready; `Err` if it exits first or `within` passes.
pub fn wait_ready(
    governor: &mut ChildGuard,
    addr: SocketAddr,
    within: Duration,
) -> Result<(), String> {
    process::wait_ready(governor, within, || is_ready(addr))
}
