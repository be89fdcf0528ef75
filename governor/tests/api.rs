//! The HTTP API through `app(state).oneshot(..)` (no socket): document shape, ETag / 304,
//! long-poll, readiness, and `/metrics` checked by `promtool check metrics`.

// Test helpers outside #[test] functions unwrap and panic too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use huntgate_governor::api::{app, AppState};
use huntgate_governor::clock::secs;
use huntgate_governor::governor::Governor;
use huntgate_governor::law::{HuntSpec, Knobs};
use huntgate_governor::policy::{Policy, RedisEndpoint};
use huntgate_governor::signal::{ErrorCause, ReadError, SignalId};
use support::{promtool_check, NoSources};
use tokio::sync::watch;
use tower::ServiceExt;

fn redis() -> SignalId {
    SignalId::parse("redis:main").unwrap()
}

fn policy() -> Policy {
    let mut p = Policy::default();
    p.redis.insert(
        "main".into(),
        RedisEndpoint {
            url: "redis://127.0.0.1:1".into(),
            capacity_bytes: None,
        },
    );
    p.default.signals = vec![redis()];
    p.hunts.insert(
        "hunt-001".into(),
        HuntSpec {
            max_hunters: 50_000,
            min_hunters: 0,
            signals: vec![redis()],
            knobs: Knobs::default(),
            pin_ratio: None,
        },
    );
    p
}

struct Fixture {
    governor: Governor,
    router: Router,
    stop: watch::Sender<bool>,
}

fn fixture() -> Fixture {
    let governor = Governor::new(policy(), Arc::new(NoSources), 41, 1_800_000_000_000);
    let (stop, shutdown) = watch::channel(false);
    let router = app(AppState::new(governor.subscribe(), shutdown));
    Fixture {
        governor,
        router,
        stop,
    }
}

fn get(uri: &str, if_none_match: Option<&str>) -> Request<Body> {
    let mut b = Request::get(uri);
    if let Some(tag) = if_none_match {
        b = b.header(header::IF_NONE_MATCH, tag);
    }
    b.body(Body::empty()).unwrap()
}

async fn body(resp: axum::response::Response) -> String {
    String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap()
}

#[tokio::test]
async fn not_ready_until_the_first_evaluation() {
    let mut f = fixture();
    let r = f
        .router
        .clone()
        .oneshot(get("/readyz", None))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let r = f
        .router
        .clone()
        .oneshot(get("/v1/throttle", None))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let r = f
        .router
        .clone()
        .oneshot(get("/healthz", None))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    f.governor
        .evaluate_with(vec![(redis(), Ok(0.1))], 1_800_000_000_000);
    let r = f
        .router
        .clone()
        .oneshot(get("/readyz", None))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn document_shape_and_etag() {
    let mut f = fixture();
    let t0 = 1_800_000_000_000;
    f.governor.evaluate_with(vec![(redis(), Ok(0.95))], t0);
    let r = f
        .router
        .clone()
        .oneshot(get("/v1/throttle", None))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::ETAG], "\"42\"");
    assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    let doc: serde_json::Value = serde_json::from_str(&body(r).await).unwrap();
    let expected = serde_json::json!({
        "version": 42,
        "generated_at_ms": 1_800_000_000_000u64,
        "ttl_s": 10,
        "default_ratio": 0.9,
        "hunts": {
            "hunt-001": {"max_hunters": 50000, "ratio": 0.9, "limit": 45000, "reason": "redis_memory"}
        }
    });
    assert_eq!(doc, expected);
    // The filter's own parser accepts it (the contract with the filter side).
    let table = huntgate_core::throttle::ThrottleTable::decode(doc.to_string().as_bytes()).unwrap();
    assert_eq!(table.version, 42);
    assert_eq!(table.default_ratio, 0.9);
    let entry = table.hunts["hunt-001"];
    assert_eq!((entry.ratio, entry.max_hunters), (0.9, Some(50_000)));

    // Conditional: the same version → 304 with the ETag; another → 200.
    for tag in ["\"42\"", "W/\"42\"", "\"7\", \"42\"", "*"] {
        let r = f
            .router
            .clone()
            .oneshot(get("/v1/throttle", Some(tag)))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{tag}");
        assert_eq!(r.headers()[header::ETAG], "\"42\"");
        assert!(body(r).await.is_empty());
    }
    let r = f
        .router
        .clone()
        .oneshot(get("/v1/throttle", Some("\"41\"")))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // A later evaluation with the same content keeps the version (and so the 304).
    f.governor
        .evaluate_with(vec![(redis(), Ok(0.95))], t0 + secs(5));
    let r = f
        .router
        .clone()
        .oneshot(get("/v1/throttle", Some("\"42\"")))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn bad_wait_s_is_rejected() {
    let mut f = fixture();
    f.governor.evaluate_with(vec![(redis(), Ok(0.1))], 0);
    for q in ["61", "-1", "soon"] {
        let r = f
            .router
            .clone()
            .oneshot(get(&format!("/v1/throttle?wait_s={q}"), Some("\"42\"")))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{q}");
        assert!(body(r)
            .await
            .contains("wait_s must be an integer in [0, 60]"));
    }
}

/// Issue 11: `?wait_s=garbage` without `If-None-Match` answered 400, although the README
/// says `wait_s` is then ignored. It is only validated when it would be used.
#[tokio::test]
async fn garbage_wait_s_without_if_none_match_is_ignored() {
    let mut f = fixture();
    f.governor.evaluate_with(vec![(redis(), Ok(0.1))], 0);
    for tag in [None, Some("\"1\"")] {
        let r = f
            .router
            .clone()
            .oneshot(get("/v1/throttle?wait_s=garbage", tag))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{tag:?}");
    }
}

/// A proxy waiting with the current version gets the new document as soon as the governor
/// publishes one, not at the end of wait_s.
#[tokio::test(start_paused = true)]
async fn long_poll_returns_at_once_on_change() {
    let mut f = fixture();
    f.governor.evaluate_with(vec![(redis(), Ok(0.1))], 0);
    let version = f.governor.document().version;
    let tag = format!("\"{version}\"");
    let router = f.router.clone();
    let start = tokio::time::Instant::now();
    let waiting = tokio::spawn(async move {
        router
            .oneshot(get("/v1/throttle?wait_s=30", Some(&tag)))
            .await
            .unwrap()
    });
    // Let the request reach its wait.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!waiting.is_finished());
    let m = body(
        f.router
            .clone()
            .oneshot(get("/metrics", None))
            .await
            .unwrap(),
    )
    .await;
    assert!(m.contains("huntgate_long_polls_waiting 1\n"), "{m}");
    // Same content (a new generated_at only): the poll keeps waiting.
    f.governor.evaluate_with(vec![(redis(), Ok(0.1))], secs(5));
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(
        !waiting.is_finished(),
        "an unchanged version does not release the poll"
    );
    // A change: released at once.
    f.governor
        .evaluate_with(vec![(redis(), Ok(0.99))], secs(10));
    let r = waiting.await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO, "no (virtual) time passed");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()[header::ETAG],
        format!("\"{}\"", version + 1).as_str()
    );
    let doc: serde_json::Value = serde_json::from_str(&body(r).await).unwrap();
    assert_eq!(doc["hunts"]["hunt-001"]["ratio"], 0.9);
}

#[tokio::test(start_paused = true)]
async fn long_poll_times_out_with_304() {
    let mut f = fixture();
    f.governor.evaluate_with(vec![(redis(), Ok(0.1))], 0);
    let tag = format!("\"{}\"", f.governor.document().version);
    let start = tokio::time::Instant::now();
    let r = f
        .router
        .clone()
        .oneshot(get("/v1/throttle?wait_s=20", Some(&tag)))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(start.elapsed(), Duration::from_secs(20));
    assert_eq!(r.headers()[header::ETAG], tag.as_str());
    // A stale ETag is answered at once, whatever wait_s says.
    let r = f
        .router
        .clone()
        .oneshot(get("/v1/throttle?wait_s=20", Some("\"1\"")))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(start.elapsed(), Duration::from_secs(20));
}

#[tokio::test(start_paused = true)]
async fn shutdown_releases_long_polls() {
    let mut f = fixture();
    f.governor.evaluate_with(vec![(redis(), Ok(0.1))], 0);
    let tag = format!("\"{}\"", f.governor.document().version);
    let router = f.router.clone();
    let waiting = tokio::spawn(async move {
        router
            .oneshot(get("/v1/throttle?wait_s=60", Some(&tag)))
            .await
            .unwrap()
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let start = tokio::time::Instant::now();
    f.stop.send(true).unwrap();
    let r = waiting.await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test]
async fn metrics_list_every_family() {
    let mut f = fixture();
    f.governor.evaluate_with(vec![(redis(), Ok(0.95))], 1_000);
    f.governor.evaluate_with(
        vec![(
            redis(),
            Err(ReadError::new(ErrorCause::Connect, "connection refused")),
        )],
        6_000,
    );
    let r = f
        .router
        .clone()
        .oneshot(get("/metrics", None))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()[header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = body(r).await;
    for line in [
        "veltrix_hunt_throttle_ratio{hunt=\"hunt-001\"} 0.9",
        "veltrix_hunt_max_hunters{hunt=\"hunt-001\"} 50000",
        "veltrix_hunt_limit{hunt=\"hunt-001\"} 45000",
        "huntgate_hunt_reason{hunt=\"hunt-001\",reason=\"redis_memory\"} 1",
        "huntgate_default_throttle_ratio 0.9",
        "huntgate_signal_value{signal=\"redis:main\"} 0.95",
        "huntgate_signal_up{signal=\"redis:main\"} 0",
        "huntgate_signal_stale{signal=\"redis:main\"} 0",
        "huntgate_signal_age_seconds{signal=\"redis:main\"} 5",
        "huntgate_signal_read_errors_total{signal=\"redis:main\"} 1",
        "huntgate_signal_error_cause{signal=\"redis:main\",cause=\"connect\"} 1",
        "huntgate_http_connections{pool=\"api\"} 0",
        "huntgate_http_connections_rejected_total 0",
        "huntgate_state_saves_total{result=\"success\"} 0",
        "huntgate_policy_ignored_files 0",
        "huntgate_decisions_total{reason=\"redis_memory\"} 4",
        "huntgate_decisions_total{reason=\"pinned\"} 0",
        "huntgate_ratio_changes_total{reason=\"redis_memory\"} 2",
        "huntgate_evaluations_total 2",
        "huntgate_policy_reloads_total{result=\"success\"} 1",
        "huntgate_policy_reloads_total{result=\"failure\"} 0",
        "huntgate_policy_last_reload_ok 1",
        "huntgate_policy_hunts 1",
        "huntgate_ready 1",
        "huntgate_long_polls_waiting 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }
    promtool_check(&text);
}

#[tokio::test]
async fn metrics_before_readiness_and_with_odd_labels_pass_promtool() {
    let f = fixture();
    let r = f
        .router
        .clone()
        .oneshot(get("/metrics", None))
        .await
        .unwrap();
    promtool_check(&body(r).await);

    // Group ids may hold quotes and backslashes: labels are escaped.
    let mut p = policy();
    p.kafka = Some(huntgate_governor::policy::KafkaCluster {
        brokers: "127.0.0.1:1".into(),
    });
    let odd = SignalId::parse("kafka:team \"a\\b\"/events").unwrap();
    p.default.signals.push(odd.clone());
    let mut g = Governor::new(p, Arc::new(NoSources), 1, 0);
    g.evaluate_with(vec![(odd, Ok(12.0)), (redis(), Ok(0.2))], 0);
    let text = huntgate_governor::metrics::render(&g.subscribe().borrow());
    assert!(
        text.contains(r#"huntgate_signal_value{signal="kafka:team \"a\\b\"/events"} 12"#),
        "{text}"
    );
    promtool_check(&text);
}
