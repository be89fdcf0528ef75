//! Test-only (cargo feature `crash-test`, never in a release build): a request that
//! carries [`CRASH_HEADER`] traps the worker's VM, so the e2e suite can show what
//! Envoy's `failure_policy: FAIL_RELOAD` keeps (shared data: counts and sessions) and
//! what it loses (the crashing request). Every other request goes on as usual.

use crate::host::{self, HeaderMap};

/// The request header that traps the VM.
pub const CRASH_HEADER: &str = "x-huntgate-test-crash";

/// Traps the VM when the current request carries [`CRASH_HEADER`].
#[allow(clippy::panic)] // the point of this test-only build
pub fn trap_if_asked() {
    if matches!(
        host::get_header(HeaderMap::Request, CRASH_HEADER),
        Ok(Some(_))
    ) {
        panic!("{CRASH_HEADER}: trapping this VM on purpose (crash-test build)");
    }
}
