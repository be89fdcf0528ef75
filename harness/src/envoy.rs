//! Starting Envoy the one way the tests, the bench and the demo all do: the binary from
//! `$HUNTGATE_ENVOY`, the tool cache or `PATH`; a rendered bootstrap (each caller renders
//! its own); `--concurrency` workers; a base id of its own and no hot restart, so several
//! run side by side and none leaves a shared memory region in /dev/shm; ready once the
//! admin's `/ready` says `LIVE` (and, when given, the listener accepts connections).

use std::ffi::OsString;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::http1;
use crate::process::{self, ChildGuard};
use crate::tools::{cached, tool_from, which};

/// The Envoy binary: `$HUNTGATE_ENVOY` (a name on `PATH`, or a path, a relative one from
/// `root`), else the tool cache's `bin/envoy`, else `envoy` on `PATH`.
pub fn envoy_binary(root: &Path) -> Result<PathBuf, String> {
    tool_from(
        "HUNTGATE_ENVOY",
        root,
        cached("bin/envoy").or_else(|| which("envoy")),
        "Envoy",
    )
}

/// The arguments after the binary: bootstrap `config`, `concurrency` workers, a dynamic
/// base id, hot restart off, and `log_level` (e.g. `"warning"`, or `"info"` with the
/// start-up banner of component `main` kept to warnings).
pub fn args(config: &Path, concurrency: u32, log_level: &str) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["-c".into(), config.into()];
    for arg in [
        "--concurrency",
        &concurrency.to_string(),
        "--use-dynamic-base-id",
        "--disable-hot-restart",
        "--log-level",
        log_level,
        "--component-log-level",
        "main:warning",
    ] {
        args.push(arg.into());
    }
    args
}

/// Whether the admin API at `admin` answers `/ready` with 200 `LIVE`.
pub fn is_ready(admin: SocketAddr) -> bool {
    http1::get(admin, "/ready", Duration::from_secs(2))
        .is_ok_and(|r| r.status == 200 && r.body.trim() == "LIVE")
}

/// Waits until `envoy` is ready (admin `/ready` LIVE, and `listener` accepting when
/// given); `Err` if it exits first or `within` passes.
pub fn wait_ready(
    envoy: &mut ChildGuard,
    admin: SocketAddr,
    listener: Option<SocketAddr>,
    within: Duration,
) -> Result<(), String> {
    process::wait_ready(envoy, within, || {
        let accepting = listener.is_none_or(|addr| {
            TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
        });
        accepting && is_ready(admin)
    })
}
