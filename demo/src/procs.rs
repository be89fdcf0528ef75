//! Child processes that are always stopped (on drop, so also on error and Ctrl-C), free
//! loopback ports, and waiting for readiness.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// How long a child gets after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// A running child process, stopped (SIGTERM, then SIGKILL) and reaped when dropped.
pub struct ChildGuard {
    name: String,
    child: Child,
    log: Option<PathBuf>,
    stopped: bool,
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
        let child = command
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", command.get_program()))?;
        Ok(Self {
            name: name.to_string(),
            child,
            log: log.map(Path::to_path_buf),
            stopped: false,
        })
    }

    /// Whether the child still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Fails with the log's tail if the child exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if self.running() {
            return Ok(());
        }
        anyhow::bail!("{} exited; log tail:\n{}", self.name, self.log_tail(30))
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
        if self.stopped {
            return;
        }
        self.stopped = true;
        if !self.running() {
            let _ = self.child.wait();
            return;
        }
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on a child we spawned and have not reaped.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + TERM_GRACE;
        while Instant::now() < deadline {
            if !self.running() {
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free port on 127.0.0.1 below the ephemeral range, not in `taken`.
pub fn free_port(taken: &mut Vec<u16>) -> anyhow::Result<u16> {
    let seed = std::process::id() as u64 ^ (taken.len() as u64) << 20;
    for attempt in 0..2000u64 {
        let port = 20_000 + (crate::ramp::splitmix(seed ^ attempt) % 12_000) as u16;
        if taken.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.push(port);
            return Ok(port);
        }
    }
    anyhow::bail!("no free port on 127.0.0.1")
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
                child.name,
                child.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
