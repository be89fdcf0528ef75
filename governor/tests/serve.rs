//! The running service in-process (`serve` on loopback sockets) under paused tokio time:
//! connection timeouts and the cap (issue 11, defect 2), the bounded drain (defect 4) and
//! the state saved on the way out (defect 3). Virtual time makes every duration exact: a
//! 10 s header timeout closes a slowloris client after exactly 10 s, in milliseconds of
//! real time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use huntgate_governor::clock::{Clock, Millis};
use huntgate_governor::listener::Limits;
use huntgate_governor::persist::{FileStore, StateStore};
use huntgate_governor::policy::Overrides;
use huntgate_governor::serve::{serve, ServeConfig, ServeError, RELOAD_POLL};
use support::{write, NoSources};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

const T0: Millis = 1_800_000_000_000;

/// Virtual wall clock: T0 plus the tokio time elapsed since the test started.
struct VirtualClock(Instant);

impl Clock for VirtualClock {
    fn now_ms(&self) -> Millis {
        T0 + u64::try_from(self.0.elapsed().as_millis()).unwrap()
    }
}

struct Running {
    addr: SocketAddr,
    probe: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
    _dir: tempfile::TempDir,
}

async fn start(
    limits: Limits,
    drain: Duration,
    probe: bool,
    state: Option<&std::path::Path>,
) -> Running {
    start_rescanning(limits, drain, probe, state, RELOAD_POLL).await
}

/// [`start`] re-reading the policy directory every `rescan` without a notification.
async fn start_rescanning(
    limits: Limits,
    drain: Duration,
    probe: bool,
    state: Option<&std::path::Path>,
    rescan: Duration,
) -> Running {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "defaults.yaml", "eval_period_s: 1\n");
    write(dir.path(), "hunts/hunt-001.yaml", "max_hunters: 100\n");
    let probe_addr = if probe {
        Some(
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap(),
        )
    } else {
        None
    };
    let config = ServeConfig {
        policies: dir.path().to_path_buf(),
        overrides: Overrides::default(),
        listen: "127.0.0.1:0".parse().unwrap(),
        probe_listen: probe_addr,
        limits,
        drain,
        state: state.map(|d| Arc::new(FileStore::new(d)) as Arc<dyn StateStore>),
        coordination: None,
        rescan,
        grpc: Default::default(),
        operator: huntgate_governor::operator::store::OperatorStore::Memory,
        replica: "test".into(),
    };
    let (stop, shutdown) = watch::channel(false);
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(serve(
        config,
        Arc::new(VirtualClock(Instant::now())),
        Arc::new(NoSources),
        shutdown,
        move |a| {
            let _ = tx.send(a);
        },
    ));
    let addr = rx.await.unwrap();
    Running {
        addr,
        probe: probe_addr,
        stop,
        task,
        _dir: dir,
    }
}

/// One GET on a new connection: (status, body); status 0 if the connection was closed
/// without an answer.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: governor\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw).await;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

async fn metric(addr: SocketAddr, line_prefix: &str) -> String {
    let (_, body) = get(addr, "/metrics").await;
    body.lines()
        .find(|l| l.starts_with(line_prefix))
        .unwrap_or_else(|| panic!("no {line_prefix} in\n{body}"))
        .to_string()
}

/// Reads until the server closes the connection; returns when it did (virtual time).
async fn closed_at(mut s: TcpStream) -> Instant {
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return Instant::now(),
            Ok(_) => {}
        }
    }
}

async fn ready(addr: SocketAddr) {
    for _ in 0..100 {
        if get(addr, "/readyz").await.0 == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not ready");
}

fn limits() -> Limits {
    Limits {
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        max_connections: 8,
        probe_connections: 2,
        probe_timeout: Duration::from_secs(2),
    }
}

/// Issue 11, defect 2: a client sending one byte a second stayed connected forever, and a
/// full house of them made `/healthz` time out. Now a slowloris client is closed exactly at
/// the header timeout, and while every API slot is taken `/healthz` is still answered from
/// the reserved probe slots (the API itself says 503 instead of hanging).
#[tokio::test(start_paused = true)]
async fn slowloris_does_not_starve_healthz() {
    let g = start(limits(), Duration::from_secs(5), false, None).await;
    ready(g.addr).await;
    let mut loris = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(g.addr).await.unwrap();
        let opened = Instant::now();
        s.write_all(b"GET /v1/throttle HTTP/1.1\r\n").await.unwrap();
        let (mut rd, mut wr) = s.into_split();
        let writer = tokio::spawn(async move {
            // One byte a second, for longer than any timeout.
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if wr.write_all(b"X").await.is_err() {
                    return;
                }
            }
        });
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => return Instant::now(),
                    Ok(_) => {}
                }
            }
        });
        loris.push((opened, reader, writer));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Every API slot is held by a slowloris: probes still answer, the API refuses at once.
    assert_eq!(get(g.addr, "/healthz").await, (200, "ok\n".to_string()));
    assert_eq!(get(g.addr, "/readyz").await.0, 200);
    let (status, body) = get(g.addr, "/v1/throttle").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("too many connections"), "{body}");
    assert_eq!(
        metric(g.addr, "huntgate_http_connections{pool=\"api\"}").await,
        "huntgate_http_connections{pool=\"api\"} 8"
    );
    for (opened, reader, writer) in loris {
        // Virtual time: without the timeout this would wait forever, not fail.
        let closed = tokio::time::timeout(Duration::from_secs(30), reader)
            .await
            .expect("the slowloris client was not closed")
            .unwrap();
        writer.abort();
        assert_eq!(
            (closed - opened).as_secs(),
            10,
            "closed at the 10 s header timeout (virtual time)"
        );
    }
    // The slots are free again.
    assert_eq!(get(g.addr, "/v1/throttle").await.0, 200);
    assert_eq!(
        metric(g.addr, "huntgate_http_connections_timed_out_total").await,
        "huntgate_http_connections_timed_out_total 8"
    );
    g.stop.send(true).unwrap();
    g.task.await.unwrap().unwrap();
}

/// Issue 11, defect 2: 1,000 idle connections were all still held after 60 s. Now beyond
/// the cap they are refused at once, the rest are closed at the header timeout, and the
/// probe listener answers throughout.
#[tokio::test(start_paused = true)]
async fn idle_flood_is_capped_and_timed_out() {
    let g = start(limits(), Duration::from_secs(5), true, None).await;
    ready(g.addr).await;
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(g.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let probe = g.probe.unwrap();
    assert_eq!(get(probe, "/healthz").await.0, 200);
    assert_eq!(
        metric(probe, "huntgate_http_connections_rejected_total").await,
        "huntgate_http_connections_rejected_total 290",
        "8 API and 2 probe slots, the other 290 refused"
    );
    let opened = Instant::now();
    let mut closes = Vec::new();
    for s in idle {
        closes.push(tokio::spawn(closed_at(s)));
    }
    let mut held_longest = Duration::ZERO;
    for c in closes {
        let closed = tokio::time::timeout(Duration::from_secs(120), c)
            .await
            .expect("an idle connection was held past 120 s (virtual)")
            .unwrap();
        held_longest = held_longest.max(closed - opened);
    }
    assert!(held_longest <= Duration::from_secs(10), "{held_longest:?}");
    assert_eq!(
        metric(probe, "huntgate_http_connections{pool=\"api\"}").await,
        "huntgate_http_connections{pool=\"api\"} 0"
    );
    assert_eq!(get(g.addr, "/v1/throttle").await.0, 200);
    g.stop.send(true).unwrap();
    g.task.await.unwrap().unwrap();
}

/// Issue 11, defect 4: SIGTERM waited for a client that had sent half a request (> 15 s,
/// past the manifest's 10 s grace period). The drain now ends at its deadline; the saved
/// state is written on the way out.
#[tokio::test(start_paused = true)]
async fn sigterm_drain_is_bounded() {
    let state = tempfile::tempdir().unwrap();
    let mut l = limits();
    l.header_timeout = Duration::from_secs(60); // the drain deadline, not this, must end it
    let g = start(l, Duration::from_secs(3), false, Some(state.path())).await;
    ready(g.addr).await;
    let mut half = TcpStream::connect(g.addr).await.unwrap();
    half.write_all(b"GET /v1/throttle HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert_eq!(
        metric(g.addr, "huntgate_http_connections{pool=\"api\"}").await,
        "huntgate_http_connections{pool=\"api\"} 2",
        "the half-sent request and this one"
    );
    let client = tokio::spawn(closed_at(half));
    let stopped = Instant::now();
    g.stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(30), g.task)
        .await
        .expect("the drain did not end (virtual 30 s)")
        .unwrap()
        .unwrap();
    let took = stopped.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(4),
        "drained in {took:?} (virtual): the 3 s deadline, then closed"
    );
    let closed = client.await.unwrap();
    assert!(closed - stopped < Duration::from_secs(4));
    let saved = FileStore::new(state.path()).load().unwrap().unwrap();
    assert!(saved.hunts.contains_key("hunt-001"));
}

/// A state directory that cannot be written never stops the governor: the failure is
/// counted (and logged once), the service keeps serving.
#[tokio::test(start_paused = true)]
async fn unwritable_state_dir_is_counted_not_fatal() {
    let tmp = tempfile::tempdir().unwrap();
    let not_a_dir = tmp.path().join("file");
    std::fs::write(&not_a_dir, "x").unwrap();
    let g = start(limits(), Duration::from_secs(1), false, Some(&not_a_dir)).await;
    ready(g.addr).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let failed = metric(g.addr, "huntgate_state_saves_total{result=\"failure\"}").await;
    assert_ne!(failed, "huntgate_state_saves_total{result=\"failure\"} 0");
    assert_eq!(get(g.addr, "/v1/throttle").await.0, 200);
    g.stop.send(true).unwrap();
    g.task.await.unwrap().unwrap();
}

/// A policy edit is read when the directory notifies it, not at the next rescan: with
/// the rescan an hour away, a changed `max_hunters` still shows in the document.
#[tokio::test]
async fn a_policy_edit_is_read_when_notified_without_waiting_for_the_rescan() {
    let g = start_rescanning(
        limits(),
        Duration::from_secs(1),
        false,
        None,
        Duration::from_secs(3_600),
    )
    .await;
    let document = |body: &str| -> serde_json::Value { serde_json::from_str(body).unwrap() };
    // Ready once the first evaluation ran.
    let mut body = String::new();
    for _ in 0..200 {
        let (status, text) = get(g.addr, "/v1/throttle").await;
        if status == 200 {
            body = text;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        document(&body)["hunts"]["hunt-001"]["max_hunters"],
        100,
        "{body}"
    );
    write(g._dir.path(), "hunts/hunt-001.yaml", "max_hunters: 40\n");
    let mut seen = 100;
    for _ in 0..200 {
        let (_, body) = get(g.addr, "/v1/throttle").await;
        seen = document(&body)["hunts"]["hunt-001"]["max_hunters"]
            .as_u64()
            .unwrap_or(0);
        if seen == 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, 40, "the edit was not read before the rescan");
    g.stop.send(true).unwrap();
    g.task.await.unwrap().unwrap();
}
