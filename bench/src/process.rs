//! The child-process guard of the one harness (`huntgate-harness`), with the bench's
//! error style: a child that exited early, or had to be killed at its stop, is an error.

use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{bail, Result};
pub use huntgate_harness::process::ChildGuard;

/// What the bench asks of a guarded child.
pub trait Checked {
    /// Fails if the child has already exited.
    fn check_running(&mut self) -> Result<()>;
    /// SIGTERM, then SIGKILL after `grace`; fails if it had to be killed (valgrind's counts
    /// would be lost).
    fn stop_checked(&mut self, grace: Duration) -> Result<ExitStatus>;
}

impl Checked for ChildGuard {
    fn check_running(&mut self) -> Result<()> {
        match self.try_status() {
            Some(status) => bail!("{} exited early: {status}", self.name()),
            None => Ok(()),
        }
    }

    fn stop_checked(&mut self, grace: Duration) -> Result<ExitStatus> {
        match self.stop_within(grace) {
            (Some(status), false) => Ok(status),
            (_, true) => bail!("{} did not stop within {grace:?}; killed", self.name()),
            (None, false) => bail!("{} was not running", self.name()),
        }
    }
}
