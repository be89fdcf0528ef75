//! A child process that is always stopped: on [`ChildGuard::stop`], on drop, and so also
//! when a test panics or a bench run fails half-way.
//!
//! Stopping sends SIGTERM first — Envoy then removes its shared memory region in
//! /dev/shm, valgrind writes its counts, the governor saves its state — and SIGKILL if the
//! child is still there after the grace period ([`TERM_GRACE`] unless told otherwise).
//! [`ChildGuard::kill`] is the SIGKILL at once that fault tests want.

use std::process::{Child, ChildStdout, Command, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

/// How long a child gets to exit after SIGTERM before it is killed.
pub const TERM_GRACE: Duration = Duration::from_secs(5);
/// How often a waiting stop looks at the child.
const POLL: Duration = Duration::from_millis(20);

/// Owns a running child process and stops it when dropped.
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
    status: Option<ExitStatus>,
}

impl ChildGuard {
    /// Guards `child`, naming it `name` in messages.
    pub fn new(name: impl Into<String>, child: Child) -> Self {
        Self {
            name: name.into(),
            child: Some(child),
            status: None,
        }
    }

    /// Spawns `command` and guards it.
    pub fn spawn(name: impl Into<String>, command: &mut Command) -> std::io::Result<Self> {
        let name = name.into();
        let child = command
            .spawn()
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot start {name}: {e}")))?;
        Ok(Self::new(name, child))
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id (0 once taken out of the guard).
    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The exit status if the child has exited, without blocking.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Some(child) = self.child.as_mut() {
                self.status = child.try_wait().ok().flatten();
            }
        }
        self.status
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.try_status().is_none()
    }

    /// Waits at most `timeout` for the child to exit by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return Some(status);
            }
            if self.child.is_none() || Instant::now() >= deadline {
                return None;
            }
            thread::sleep(POLL);
        }
    }

    /// Stops the child (SIGTERM, then SIGKILL after [`TERM_GRACE`]) and reaps it.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.stop_within(TERM_GRACE).0
    }

    /// Stops the child (SIGTERM, then SIGKILL after `grace`) and reaps it: its status, and
    /// whether it had to be killed.
    pub fn stop_within(&mut self, grace: Duration) -> (Option<ExitStatus>, bool) {
        if self.try_status().is_some() || self.child.is_none() {
            return (self.status, false);
        }
        if let Some(pid) = self
            .child
            .as_ref()
            .and_then(|c| libc::pid_t::try_from(c.id()).ok())
        {
            // SAFETY: kill(2) with a pid we spawned and have not reaped yet, so it cannot
            // name another process.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        if self.wait_timeout(grace).is_some() {
            return (self.status, false);
        }
        self.kill();
        (self.status, true)
    }

    /// Kills the child at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if self.status.is_none() {
                let _ = child.kill();
                self.status = child.wait().ok();
            }
        }
    }

    /// Takes the child out of the guard's care (the caller must reap it).
    pub fn take(&mut self) -> Option<Child> {
        self.child.take()
    }

    /// The child's piped stdout (the child stays guarded).
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.as_mut()?.stdout.take()
    }
}

/// Waits until `ready()` holds while `child` runs, probing every 50 ms; `Err` naming the
/// child if it exits first or `within` passes.
pub fn wait_ready(
    child: &mut ChildGuard,
    within: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_status() {
            return Err(format!(
                "{} exited ({status}) before it was ready",
                child.name()
            ));
        }
        if ready() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("{} not ready within {within:?}", child.name()));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}
