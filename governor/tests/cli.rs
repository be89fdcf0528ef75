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
    let _guard = ChildGuard::new("huntgate-governor", child);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_until(Duration::from_secs(20), "/readyz", || {
        std::net::TcpStream::connect(addr).ok()?;
        (http_get(addr, "/readyz", &[]).0 == 200).then_some(())
    });
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
