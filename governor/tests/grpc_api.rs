//! The gRPC API of the real binary: round trips with the Rust client, with huntgatectl and
//! with an independent Python client (grpcio, stubs generated from the same `.proto`);
//! auth; bad input; an override surviving a restart and shared by two replicas through a
//! real coordination Redis; a watch stream seeing a cut that a real Redis drives.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use huntgate_governor::grpc::pb;
use huntgate_governor::grpc::pb::governor_client::GovernorClient;
use support::{free_port, http_get, wait_until, write, ChildGuard, RedisServer};
use tonic::transport::Channel;
use tonic::Code;

const BIN: &str = env!("CARGO_BIN_EXE_huntgate-governor");
const CTL: &str = env!("CARGO_BIN_EXE_huntgatectl");
const TOKEN: &str = "orchestrator-token-0123456789";

/// Policies without signals (the ratio moves only by overrides): hunt `h1` has a file.
const DEFAULTS: &str = "eval_period_s: 1\nmax_hunters: 100\nsignals: []\n";

/// A running governor with both gRPC listeners and a token file.
struct Gov {
    guard: ChildGuard,
    http: SocketAddr,
    grpc: String,
    read: String,
    tokens: PathBuf,
}

fn policies(defaults: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "defaults.yaml", defaults);
    write(dir.path(), "hunts/h1.yaml", "max_hunters: 500\n");
    dir
}

fn start(policies: &Path, work: &Path, extra: &[&str]) -> Gov {
    let tokens = work.join("tokens");
    if !tokens.exists() {
        std::fs::write(&tokens, format!("orchestrator {TOKEN}\n")).unwrap();
    }
    let (http, grpc, read) = (free_port(), free_port(), free_port());
    let http = SocketAddr::from(([127, 0, 0, 1], http));
    let mut command =
        huntgate_harness::governor::serve_command(Path::new(BIN), policies, http, "warn");
    command
        .arg("--grpc-token-file")
        .arg(&tokens)
        .args([
            "--grpc-listen",
            &format!("127.0.0.1:{grpc}"),
            "--grpc-read-listen",
            &format!("127.0.0.1:{read}"),
        ])
        .args(extra)
        .stdout(Stdio::null());
    let mut guard = ChildGuard::spawn("huntgate-governor", &mut command).unwrap();
    huntgate_harness::governor::wait_ready(&mut guard, http, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    Gov {
        guard,
        http,
        grpc: format!("http://127.0.0.1:{grpc}"),
        read: format!("http://127.0.0.1:{read}"),
        tokens,
    }
}

async fn client(addr: &str) -> GovernorClient<Channel> {
    GovernorClient::connect(addr.to_owned()).await.unwrap()
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn set(hunt: &str, max: Option<u32>, reason: &str) -> pb::SetOverrideRequest {
    pb::SetOverrideRequest {
        hunt: hunt.into(),
        max_hunters: max,
        reason: reason.into(),
        ..Default::default()
    }
}

/// The document's entry for `hunt` over HTTP (what every proxy fetches).
fn document_limit(http: SocketAddr, hunt: &str) -> Option<u64> {
    let (_, _, body) = http_get(http, "/v1/throttle", &[]);
    let doc: serde_json::Value = serde_json::from_str(&body).ok()?;
    doc["hunts"][hunt]["limit"].as_u64()
}

#[tokio::test]
async fn an_override_round_trips_reaches_the_document_and_is_audited() {
    let dir = policies(DEFAULTS);
    let work = tempfile::tempdir().unwrap();
    let gov = start(dir.path(), work.path(), &[]);
    let mut c = client(&gov.grpc).await;

    let h1 = c
        .get_hunt(pb::GetHuntRequest { hunt: "H1".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (h1.hunt.as_str(), h1.limit, h1.source.as_str()),
        ("h1", 500, "policy_file")
    );

    let mut pinned = set("h1", Some(300), "orchestrator: spike");
    pinned.mode = pb::Mode::Pinned as i32;
    pinned.pin_ratio = Some(0.5);
    let h1 = c
        .set_override(with_token(pinned, TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (h1.max_hunters, h1.ratio, h1.limit),
        (300, 0.5, 150),
        "{h1:?}"
    );
    assert_eq!(h1.reason, "pinned");
    assert_eq!(
        h1.policy.as_ref().unwrap().max_hunters,
        500,
        "ListHunts shows the file beside the override"
    );
    assert_eq!(h1.r#override.as_ref().unwrap().by, "orchestrator");
    assert_eq!(
        document_limit(gov.http, "h1"),
        Some(150),
        "in the document when the call returns"
    );

    // A hunt without a policy file, pre-warmed before its players arrive, then ended.
    let started = c
        .start_hunt(with_token(
            pb::StartHuntRequest {
                hunt: "h2".into(),
                max_hunters: Some(40),
                min_hunters: None,
                reason: "opens at 18:00".into(),
            },
            TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((started.limit, started.source.as_str()), (40, "api"));
    assert_eq!(document_limit(gov.http, "h2"), Some(40));
    let list = c
        .list_hunts(pb::ListHuntsRequest {})
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = list.hunts.iter().map(|h| h.hunt.as_str()).collect();
    assert_eq!(ids, ["h1", "h2"]);
    let ended = c
        .end_hunt(with_token(
            pb::EndHuntRequest {
                hunt: "h2".into(),
                reason: "over".into(),
            },
            TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!ended.policy_file);
    assert_eq!(
        document_limit(gov.http, "h2"),
        None,
        "an ended hunt leaves the document"
    );
    let gone = c
        .get_hunt(pb::GetHuntRequest { hunt: "h2".into() })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    // Clearing gives the file's values back; the audit log says who did what and why.
    let h1 = c
        .clear_override(with_token(
            pb::ClearOverrideRequest {
                hunt: "h1".into(),
                reason: "spike over".into(),
            },
            TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    // The law takes over from where the pin left the ratio (no jump), under the file's
    // max_hunters.
    assert_eq!(
        (h1.max_hunters, h1.ratio, h1.limit),
        (500, 0.5, 250),
        "{h1:?}"
    );
    assert!(h1.r#override.is_none() && h1.reason != "pinned", "{h1:?}");
    let audit = c
        .list_audit(pb::ListAuditRequest {
            hunt: String::new(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let actions: Vec<(&str, &str, &str)> = audit
        .entries
        .iter()
        .map(|e| (e.action.as_str(), e.hunt.as_str(), e.reason.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("clear_override", "h1", "spike over"),
            ("end_hunt", "h2", "over"),
            ("start_hunt", "h2", "opens at 18:00"),
            ("set_override", "h1", "orchestrator: spike"),
        ]
    );
    assert!(audit.entries.iter().all(|e| e.by == "orchestrator"));
    let (_, _, metrics) = http_get(gov.http, "/metrics", &[]);
    support::promtool_check(&metrics);
    assert!(
        metrics.contains("huntgate_operator_mutations_total{result=\"applied\"} 4\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("huntgate_operator_overrides 0\n"),
        "{metrics}"
    );
    drop(gov);
}

#[tokio::test]
async fn mutations_need_a_valid_token_the_read_listener_refuses_them_and_tokens_rotate() {
    let dir = policies(DEFAULTS);
    let work = tempfile::tempdir().unwrap();
    let gov = start(dir.path(), work.path(), &[]);
    let mut c = client(&gov.grpc).await;
    let none = c.set_override(set("h1", Some(10), "x")).await.unwrap_err();
    assert_eq!(none.code(), Code::Unauthenticated, "{none:?}");
    let wrong = c
        .set_override(with_token(set("h1", Some(10), "x"), "not-the-token-at-all"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated, "{wrong:?}");

    let mut reader = client(&gov.read).await;
    let denied = reader
        .set_override(with_token(set("h1", Some(10), "x"), TOKEN))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert_eq!(
        reader
            .list_hunts(pb::ListHuntsRequest {})
            .await
            .unwrap()
            .into_inner()
            .hunts
            .len(),
        1
    );
    assert_eq!(
        document_limit(gov.http, "h1"),
        Some(500),
        "nothing refused changed anything"
    );

    // Rotation without a restart: the new token works, the old one no longer does.
    let rotated = "rotated-token-abcdefghijklmnop";
    std::fs::write(&gov.tokens, format!("orchestrator-2 {rotated}\n")).unwrap();
    let h1 = c
        .set_override(with_token(set("h1", Some(10), "rotated"), rotated))
        .await
        .unwrap();
    assert_eq!(h1.into_inner().r#override.unwrap().by, "orchestrator-2");
    let old = c
        .set_override(with_token(set("h1", Some(20), "x"), TOKEN))
        .await
        .unwrap_err();
    assert_eq!(old.code(), Code::Unauthenticated);
    let (_, _, metrics) = http_get(gov.http, "/metrics", &[]);
    assert!(
        metrics.contains("huntgate_operator_mutations_total{result=\"denied\"} 4\n"),
        "{metrics}"
    );

    // An override of a hunt without a file governs it; clearing it answers the hunt as
    // unlisted hunts are.
    c.set_override(with_token(set("solo", Some(7), "api only"), rotated))
        .await
        .unwrap();
    assert_eq!(document_limit(gov.http, "solo"), Some(7));
    let solo = c
        .clear_override(with_token(
            pb::ClearOverrideRequest {
                hunt: "solo".into(),
                reason: "done".into(),
            },
            rotated,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((solo.source.as_str(), solo.limit), ("default", 100));
    assert_eq!(document_limit(gov.http, "solo"), None);
}

#[tokio::test]
async fn bad_input_is_refused_with_invalid_argument_naming_the_field() {
    let dir = policies(DEFAULTS);
    let work = tempfile::tempdir().unwrap();
    let gov = start(dir.path(), work.path(), &[]);
    let mut c = client(&gov.grpc).await;
    let mut cases: Vec<(pb::SetOverrideRequest, &str)> = vec![
        (set("bad/hunt", Some(10), "x"), "hunt"),
        (set(&"h".repeat(65), Some(10), "x"), "hunt"),
        (set("h1", Some(10_000_001), "x"), "max_hunters"),
        (set("h1", Some(10), ""), "reason"),
        (set("h1", Some(10), &"r".repeat(257)), "reason"),
    ];
    let mut negative = set("h1", None, "x");
    negative.pin_ratio = Some(-0.5);
    cases.push((negative, "pin_ratio"));
    let mut nan = set("h1", None, "x");
    nan.pin_ratio = Some(f64::NAN);
    cases.push((nan, "pin_ratio"));
    let mut ttl = set("h1", Some(10), "x");
    ttl.ttl_s = Some(0);
    cases.push((ttl, "ttl_s"));
    let mut mode = set("h1", Some(10), "x");
    mode.mode = 42;
    cases.push((mode, "mode"));
    let mut above = set("h1", Some(10), "x");
    above.min_hunters = Some(11);
    cases.push((above, "min_hunters"));
    for (request, field) in cases {
        let e = c
            .set_override(with_token(request.clone(), TOKEN))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{request:?}: {e:?}");
        assert!(
            e.message().starts_with(&format!("{field}: ")),
            "{request:?}: {}",
            e.message()
        );
    }
    let e = c
        .get_hunt(pb::GetHuntRequest { hunt: "a b".into() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("hunt: "));
    assert_eq!(document_limit(gov.http, "h1"), Some(500));
    let audit = c
        .list_audit(pb::ListAuditRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        audit.entries.is_empty(),
        "refusals are not mutations: {audit:?}"
    );
    let (_, _, metrics) = http_get(gov.http, "/metrics", &[]);
    assert!(
        metrics.contains("huntgate_operator_mutations_total{result=\"refused\"} 10\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_override_survives_a_restart_through_the_state_dir() {
    let dir = policies(DEFAULTS);
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let state_arg = state.to_str().unwrap().to_owned();
    let gov = start(dir.path(), work.path(), &["--state-dir", &state_arg]);
    let mut c = client(&gov.grpc).await;
    c.set_override(with_token(set("h1", Some(77), "keep me"), TOKEN))
        .await
        .unwrap();
    drop(c);
    drop(gov);
    assert!(state.join("operator-state.json").is_file());
    let gov = start(dir.path(), work.path(), &["--state-dir", &state_arg]);
    assert_eq!(
        document_limit(gov.http, "h1"),
        Some(77),
        "in force from the first document"
    );
    let h1 = client(&gov.grpc)
        .await
        .get_hunt(pb::GetHuntRequest { hunt: "h1".into() })
        .await
        .unwrap();
    assert_eq!(h1.into_inner().r#override.unwrap().reason, "keep me");
    // A policy edit never discards it (and ListHunts shows both).
    write(
        dir.path(),
        "hunts/h1.yaml",
        "max_hunters: 600\nmin_hunters: 5\n",
    );
    let mut c = client(&gov.grpc).await;
    let h1 = eventually("the edit read", || {
        let mut c = c.clone();
        async move {
            let h = c
                .get_hunt(pb::GetHuntRequest { hunt: "h1".into() })
                .await
                .ok()?
                .into_inner();
            (h.policy.as_ref()?.max_hunters == 600).then_some(h)
        }
    })
    .await;
    assert_eq!((h1.max_hunters, h1.min_hunters, h1.limit), (77, 5, 77));
    drop(c.list_hunts(pb::ListHuntsRequest {}).await.unwrap());
    assert_eq!(document_limit(gov.http, "h1"), Some(77));
}

#[tokio::test]
async fn two_replicas_share_one_override_through_the_coordination_redis() {
    let redis = RedisServer::start("16mb");
    let dir = policies(DEFAULTS);
    let (wa, wb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start(
        dir.path(),
        wa.path(),
        &["--coordination", &redis.url, "--replica-id", "a"],
    );
    let b = start(
        dir.path(),
        wb.path(),
        &["--coordination", &redis.url, "--replica-id", "b"],
    );
    let mut ca = client(&a.grpc).await;
    ca.set_override(with_token(set("h1", Some(42), "one for all"), TOKEN))
        .await
        .unwrap();
    wait_until(Duration::from_secs(10), "replica b's document", || {
        (document_limit(b.http, "h1") == Some(42)).then_some(())
    });
    // A restart of both keeps it (it lives in Redis, not in either replica).
    drop(a);
    drop(b);
    let b = start(
        dir.path(),
        wb.path(),
        &["--coordination", &redis.url, "--replica-id", "b"],
    );
    assert_eq!(document_limit(b.http, "h1"), Some(42));
    let audit = client(&b.grpc)
        .await
        .list_audit(pb::ListAuditRequest::default())
        .await
        .unwrap();
    let entry = &audit.into_inner().entries[0];
    assert_eq!(
        (entry.replica.as_str(), entry.reason.as_str()),
        ("a", "one for all")
    );
}

#[tokio::test]
async fn a_watch_stream_sees_a_cut_driven_by_real_redis_memory() {
    let redis = RedisServer::start("8mb");
    let defaults = format!(
        "eval_period_s: 1\nmax_hunters: 100\nsignals: [redis:main]\nredis:\n  main:\n    url: {}\ncontrol:\n  cut_interval_s: 1\n",
        redis.url
    );
    let dir = policies(&defaults);
    let work = tempfile::tempdir().unwrap();
    let gov = start(dir.path(), work.path(), &[]);
    let mut c = client(&gov.grpc).await;
    let mut stream = c
        .watch_hunts(pb::WatchHuntsRequest {
            since_version: 0,
            hunts: vec!["h1".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.hunts.len(), 1);
    assert_eq!(first.hunts[0].ratio, 1.0);
    redis.fill_above(0.9);
    let cut = loop {
        let update = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("an update within 30 s")
            .unwrap()
            .unwrap();
        assert!(update.version > first.version);
        let h1 = &update.hunts[0];
        if h1.ratio < 1.0 {
            break h1.clone();
        }
    };
    assert_eq!(cut.reason, "redis_memory");
    assert_eq!(cut.signals[0].state, "overloaded");
    assert!(cut.signals[0].value.unwrap() > 0.8);
    assert_eq!(
        cut.steps.last().unwrap().reason,
        "redis_memory",
        "explain sees the step"
    );
    drop(gov);
}

fn ctl(gov: &Gov, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(CTL)
        .arg("--addr")
        .arg(&gov.grpc)
        .arg("--token-file")
        .arg(&gov.tokens)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn huntgatectl_reads_steers_explains_and_exits_with_documented_codes() {
    let dir = policies(DEFAULTS);
    let work = tempfile::tempdir().unwrap();
    let gov = start(dir.path(), work.path(), &[]);
    let (code, out, err) = ctl(&gov, &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("HUNT"), "{out}");
    assert!(out.contains("h1") && out.contains("500"), "{out}");

    let (code, out, err) = ctl(
        &gov,
        &["set", "h1", "--max-hunters", "250", "--reason", "ctl test"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("limit 250 = floor(max_hunters 250 × ratio 1)"),
        "{out}"
    );
    let (code, out, _) = ctl(
        &gov,
        &["pin", "h1", "0.4", "--reason", "pin test", "--ttl-s", "600"],
    );
    assert_eq!(code, 0);
    assert!(out.contains("limit 200"), "{out}");
    assert!(
        out.contains("expires in 9 min") || out.contains("expires in 10 min"),
        "{out}"
    );
    let (code, out, _) = ctl(&gov, &["--json", "explain", "h1"]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(json["limit"], 200);
    assert_eq!(json["override"]["pin_ratio"], 0.4);
    let (code, out, _) = ctl(&gov, &["unpin", "h1", "--reason", "done"]);
    assert_eq!(code, 0);
    assert!(out.contains("override: none"), "{out}");
    let (code, _, _) = ctl(
        &gov,
        &["start", "h3", "--max-hunters", "9", "--reason", "warm"],
    );
    assert_eq!(code, 0);
    let (code, out, _) = ctl(&gov, &["end", "h3", "--reason", "cold"]);
    assert_eq!((code, out.trim()), (0, "hunt h3 ended"));
    let (code, out, _) = ctl(&gov, &["audit", "--limit", "2"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("end_hunt") && out.contains("start_hunt") && !out.contains("set_override"),
        "{out}"
    );

    // Exit codes: refused input 6, not found 5, no token 4, no governor 3, usage 2.
    assert_eq!(
        ctl(&gov, &["set", "h1", "--max-hunters", "5", "--reason", " "]).0,
        6
    );
    assert_eq!(ctl(&gov, &["explain", "nope"]).0, 5);
    std::fs::write(work.path().join("wrong"), "not-the-token-at-all\n").unwrap();
    let wrong = Command::new(CTL)
        .args(["--addr", &gov.grpc, "--token-file"])
        .arg(work.path().join("wrong"))
        .args(["end", "h1", "--reason", "x"])
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(4));
    let down = Command::new(CTL)
        .args([
            "--addr",
            &format!("http://127.0.0.1:{}", free_port()),
            "status",
        ])
        .output()
        .unwrap();
    assert_eq!(down.status.code(), Some(3));
    assert_eq!(ctl(&gov, &["set", "h1"]).0, 2, "--reason is required");
    drop(gov.guard);
}

/// An independent client: Python's grpcio, with stubs generated from the repository's
/// `.proto` by grpcio-tools, plus the standard health service and server reflection.
#[test]
fn an_independent_python_grpcio_client_round_trips() {
    let python = support::tool(
        "HUNTGATE_GRPC_PYTHON",
        dirs_cache().map(|c| c.join("venv-grpc/bin/python")),
        "Python with grpcio and grpcio-tools",
    );
    let dir = policies(DEFAULTS);
    let work = tempfile::tempdir().unwrap();
    let gov = start(dir.path(), work.path(), &[]);
    let proto = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grpc_client.py");
    let python_bin = python.clone();
    let out = Command::new(python)
        .arg(script)
        .arg(&proto)
        .arg(work.path())
        .arg(gov.grpc.trim_start_matches("http://"))
        .arg(TOKEN)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("python client: ok"), "{stdout}");
    assert_eq!(
        document_limit(gov.http, "h1"),
        Some(123),
        "the Python client's override is in force"
    );

    // The documented orchestrator loop (docs/examples/orchestrator_loop.py), two rounds.
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/orchestrator_loop.py");
    let out = Command::new(&python_bin)
        .arg(example)
        .args([
            "--addr",
            gov.grpc.trim_start_matches("http://"),
            "--token-file",
        ])
        .arg(&gov.tokens)
        .args(["--hunt", "h1=321", "--interval", "0.2", "--iterations", "2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.matches("h1: limit 321 = 321 x 1").count(),
        2,
        "{stdout}"
    );
    assert_eq!(document_limit(gov.http, "h1"), Some(321));
}

/// Polls `f` every 50 ms until it gives a value (at most 10 s).
#[allow(clippy::disallowed_methods)] // bounded polling of a real process
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn dirs_cache() -> Option<PathBuf> {
    std::env::var_os("HUNTGATE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huntgate")))
}

#[test]
fn the_readme_shows_the_help_of_every_huntgatectl_command() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    for command in [
        "status", "watch", "explain", "set", "pin", "unpin", "start", "end", "audit",
    ] {
        let out = Command::new(CTL).args([command, "-h"]).output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        let usage = help.lines().find(|l| l.starts_with("Usage: ")).unwrap();
        assert!(
            readme.contains(&format!("$ huntgatectl {command} -h\n")) && readme.contains(usage),
            "README is missing `{usage}`: regenerate its huntgatectl section"
        );
    }
}

#[tokio::test]
async fn an_override_with_a_lifetime_lapses_by_itself_and_the_lapse_is_audited() {
    let dir = policies(DEFAULTS);
    let work = tempfile::tempdir().unwrap();
    let gov = start(dir.path(), work.path(), &[]);
    let mut c = client(&gov.grpc).await;
    let mut brief = set("h1", Some(9), "one second");
    brief.ttl_s = Some(1);
    let h1 = c
        .set_override(with_token(brief, TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert!(h1.r#override.unwrap().expires_at_ms.is_some());
    assert_eq!(document_limit(gov.http, "h1"), Some(9));
    let audit = eventually("the lapse", || {
        let mut c = c.clone();
        async move {
            let a = c
                .list_audit(pb::ListAuditRequest::default())
                .await
                .ok()?
                .into_inner();
            (a.entries.first()?.action == "expire_override").then_some(a)
        }
    })
    .await;
    assert_eq!(audit.entries[0].by, "governor");
    assert_eq!(
        document_limit(gov.http, "h1"),
        Some(500),
        "the file applies again"
    );
}

#[test]
fn huntgatectl_watch_prints_the_current_state_then_each_change() {
    use std::io::BufRead as _;
    let dir = policies(DEFAULTS);
    let work = tempfile::tempdir().unwrap();
    let gov = start(dir.path(), work.path(), &[]);
    let child = Command::new(CTL)
        .args(["--addr", &gov.grpc, "--json", "watch", "h1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut watch = ChildGuard::new("huntgatectl watch", child);
    let stdout = watch.take_stdout().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["hunts"][0]["limit"], 500);
    assert_eq!(
        ctl(
            &gov,
            &["set", "h1", "--max-hunters", "8", "--reason", "watched"]
        )
        .0,
        0
    );
    let next: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(next["hunts"][0]["limit"], 8);
    assert!(next["version"].as_u64() > first["version"].as_u64());
    watch.kill();
}
