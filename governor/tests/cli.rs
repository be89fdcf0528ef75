//! The binary's command line: refused flags say why, a busy port prints its cause, host
//! names are accepted (issue 11, operator experience).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::{free_port, http_get, wait_until, write, ChildGuard};

const BIN: &str = env!("CARGO_BIN_EXE_huntgate-governor");

fn policies() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "defaults.yaml", "eval_period_s: 1\n");
    write(dir.path(), "hunts/hunt-001.yaml", "");
    dir
}

fn run(args: &[&str], dir: &std::path::Path) -> (bool, String) {
    let out = Command::new(BIN)
        .arg("--policies")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn log_nonsense_is_refused() {
    let dir = policies();
    let (ok, err) = run(
        &["--log", "nonsense", "--listen", "127.0.0.1:1"],
        dir.path(),
    );
    assert!(!ok);
    assert!(
        err.contains("--log `nonsense`: `nonsense` is not a level"),
        "{err}"
    );
}

#[test]
fn busy_port_prints_the_cause() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let dir = policies();
    let (ok, err) = run(&["--listen", &addr, "--log", "error"], dir.path());
    assert!(!ok);
    assert!(
        err.starts_with(&format!(
            "huntgate-governor: error: cannot listen on {addr} (--listen): "
        )),
        "{err}"
    );
    assert!(err.to_lowercase().contains("in use"), "{err}");
    assert!(!err.contains("Caused by"), "{err}");
}

#[test]
fn listen_accepts_host_names() {
    let dir = policies();
    let port = free_port();
    let child = Command::new(BIN)
        .arg("--policies")
        .arg(dir.path())
        .args(["--listen", &format!("localhost:{port}"), "--log", "warn"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard::new("huntgate-governor", child);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    huntgate_harness::governor::wait_ready(&mut guard, addr, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Issue 11: `import-legacy -o` overwrote silently (even its own input), and
/// `--hunt X -o hunts/other.yaml` wrote a file that governs `other`.
#[test]
fn import_legacy_output_is_never_overwritten_silently() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = dir.path().join("hunt-config.yml");
    std::fs::write(&legacy, "max_concurrent_hunters: 2000\n").unwrap();
    let import = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("import-legacy")
            .arg(&legacy)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let own = legacy.to_str().unwrap();
    let (ok, err) = import(&["-o", own, "--force"]);
    assert!(
        !ok && err.contains("that is the legacy file being converted"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&legacy).unwrap(),
        "max_concurrent_hunters: 2000\n"
    );
    let out = dir.path().join("defaults.yaml");
    let out = out.to_str().unwrap();
    assert!(import(&["-o", out]).0);
    let (ok, err) = import(&["-o", out]);
    assert!(!ok && err.contains("the file exists (add --force"), "{err}");
    assert!(import(&["-o", out, "--force"]).0);
    let other = dir.path().join("other.yaml");
    let (ok, err) = import(&["--hunt", "hunt-001", "-o", other.to_str().unwrap()]);
    assert!(!ok && err.contains("write it as hunt-001.yaml"), "{err}");
    assert!(!other.exists());
    let mine = dir.path().join("Hunt-001.yaml");
    assert!(import(&["--hunt", "hunt-001", "-o", mine.to_str().unwrap()]).0);
}

/// Issue 11, defect 2, with the real binary under an open-file limit of 256: 300 idle
/// connections made `/healthz` time out and the policy re-read fail with "Too many open
/// files". Now the cap is lowered to fit the limit (112), the probe listener answers, the
/// API port refuses at once instead of hanging, and a policy edit is still applied.
#[test]
fn reload_survives_a_connection_flood_under_an_fd_limit() {
    use std::os::unix::process::CommandExt as _;
    let dir = policies();
    let api: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let probe: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("--policies")
        .arg(dir.path())
        .args([
            "--listen",
            &api.to_string(),
            "--probe-listen",
            &probe.to_string(),
        ])
        .args(["--header-timeout-s", "120", "--log", "error"])
        .stdout(Stdio::null());
    // SAFETY: setrlimit is async-signal-safe; it only lowers this child's own limit.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 256,
                rlim_max: 256,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut guard = ChildGuard::new("huntgate-governor", cmd.spawn().unwrap());
    huntgate_harness::governor::wait_ready(&mut guard, probe, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}"));
    let flood: Vec<std::net::TcpStream> = (0..300)
        .map(|_| std::net::TcpStream::connect(api).unwrap())
        .collect();
    let metrics = || http_get(probe, "/metrics", &[]).2;
    wait_until(
        Duration::from_secs(20),
        "every flood connection seen",
        || {
            let m = metrics();
            m.contains("huntgate_http_connections_rejected_total 172\n")
                .then_some(())
        },
    );
    let m = metrics();
    assert!(
        m.contains("huntgate_http_connections{pool=\"api\"} 112\n")
            && m.contains("huntgate_http_connections{pool=\"probe\"} 16\n"),
        "cap lowered to 256 - 128 - 16 = 112: {m}"
    );
    assert_eq!(http_get(probe, "/healthz", &[]).0, 200);
    // Refused at once, not left hanging: a 503, or a reset if the request arrived after
    // the answer (the server does not wait for it once its polite-refusal slots are busy).
    let refused = refused_status(api);
    assert!(matches!(refused, Some(503) | None), "{refused:?}");
    write(dir.path(), "hunts/hunt-001.yaml", "max_hunters: 200\n");
    wait_until(Duration::from_secs(20), "the policy edit applied", || {
        metrics()
            .contains("veltrix_hunt_max_hunters{hunt=\"hunt-001\"} 200\n")
            .then_some(())
    });
    drop(flood);
}

/// The status of a GET `/healthz`, or None if the connection was reset.
fn refused_status(addr: std::net::SocketAddr) -> Option<u16> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut raw = Vec::new();
    match s.read_to_end(&mut raw) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
        Err(e) => panic!("{e}"),
        Ok(_) => String::from_utf8_lossy(&raw)
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok()),
    }
}

/// Issue 11: files in `hunts/` with another extension or in a sub-folder were ignored
/// silently; `check` now says so (and still validates the rest).
#[test]
fn check_warns_about_ignored_files() {
    let dir = policies();
    write(dir.path(), "hunts/Hunt-002.YAML", "max_hunters: 5\n");
    write(dir.path(), "hunts/hunt-003.json", "{}");
    write(dir.path(), "hunts/old/hunt-004.yaml", "");
    let out = Command::new(BIN)
        .args(["check", "--policies"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("valid (2 hunts"), "{stdout}");
    assert!(
        stderr.contains("hunt-003.json: ignored (not a .yaml/.yml file")
            && stderr.contains("old: ignored (a sub-folder"),
        "{stderr}"
    );
}
