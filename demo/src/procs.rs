//! The demo's child processes: the one harness's guard (`huntgate-harness`: SIGTERM, then
//! SIGKILL after a grace period; also on drop, so on error and Ctrl-C), with the child's
//! output in a log file whose tail explains a failure, and death with the demo
//! (PR_SET_PDEATHSIG); free loopback ports; waiting for readiness.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// A running child process, stopped and reaped when dropped.
pub struct ChildGuard {
    guard: huntgate_harness::process::ChildGuard,
    log: Option<PathBuf>,
}

impl ChildGuard {
    /// Spawns `command` with stdout and stderr into `log` (or discarded). The child also dies
    /// with SIGKILL if this process dies without dropping the guard (PR_SET_PDEATHSIG).
    pub fn spawn(name: &str, mut command: Command, log: Option<&Path>) -> anyhow::Result<Self> {
        match log {
            Some(path) => {
                let file = File::create(path).with_context(|| format!("{}", path.display()))?;
                command.stdout(file.try_clone()?).stderr(file);
            }
            None => {
                command.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        command.stdin(Stdio::null());
        // SAFETY: prctl is async-signal-safe and touches only the child being set up.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let guard = huntgate_harness::process::ChildGuard::spawn(name, &mut command)
            .with_context(|| format!("starting {name} ({:?})", command.get_program()))?;
        Ok(Self {
            guard,
            log: log.map(Path::to_path_buf),
        })
    }

    /// The harness's guard inside (for the harness's readiness waits).
    pub fn guard(&mut self) -> &mut huntgate_harness::process::ChildGuard {
        &mut self.guard
    }

    /// Whether the child still runs.
    pub fn running(&mut self) -> bool {
        self.guard.is_running()
    }

    /// Fails with the log's tail if the child exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if self.running() {
            return Ok(());
        }
        anyhow::bail!(
            "{} exited; log tail:\n{}",
            self.guard.name(),
            self.log_tail(30)
        )
    }

    /// The last `lines` lines of the child's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self
            .log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all.get(all.len().saturating_sub(lines)..)
            .unwrap_or_default()
            .join("\n")
    }

    /// Stops the child: SIGTERM, then SIGKILL after a grace period; reaps it.
    pub fn stop(&mut self) {
        self.guard.stop();
    }
}

/// A free port on 127.0.0.1 (the harness's: below the ephemeral range, never handed out
/// twice by this process), recorded in `taken`.
pub fn free_port(taken: &mut Vec<u16>) -> anyhow::Result<u16> {
    let port = huntgate_harness::ports::free_port();
    taken.push(port);
    Ok(port)
}

/// Waits until `addr` accepts TCP connections while `child` runs.
pub async fn wait_listening(
    child: &mut ChildGuard,
    addr: SocketAddr,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        child.check_running()?;
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "{} does not listen on {addr} after {timeout:?}; log tail:\n{}",
                child.guard.name(),
                child.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
