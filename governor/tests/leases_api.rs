//! `POST /v1/leases`, `GET /v1/fleet` and the fleet metrics, through
//! `app(state).oneshot(..)` on an injected clock.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use huntgate_governor::api::{app, AppState};
use huntgate_governor::clock::Clock;
use huntgate_governor::governor::Governor;
use huntgate_governor::law::{HuntSpec, Knobs};
use huntgate_governor::policy::Policy;
use serde_json::{json, Value};
use support::{promtool_check, NoSources};
use tokio::sync::watch;
use tower::ServiceExt;

const T0: u64 = 1_800_000_000_000;

struct TestClock(AtomicU64);

impl Clock for TestClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

struct Fixture {
    _governor: Governor,
    router: Router,
    clock: Arc<TestClock>,
    _stop: watch::Sender<bool>,
}

fn fixture() -> Fixture {
    let mut policy = Policy::default();
    policy.hunts.insert(
        "h1".into(),
        HuntSpec {
            max_hunters: 100,
            min_hunters: 0,
            signals: vec![],
            knobs: Knobs::default(),
            pin_ratio: Some(1.0),
        },
    );
    let mut governor = Governor::new(policy, Arc::new(NoSources), 1, T0);
    governor.evaluate_with(vec![], T0);
    let clock = Arc::new(TestClock(AtomicU64::new(T0)));
    let (stop, shutdown) = watch::channel(false);
    let state = AppState::new(governor.subscribe(), shutdown).with_clock(clock.clone());
    Fixture {
        _governor: governor,
        router: app(state),
        clock,
        _stop: stop,
    }
}

async fn post(router: &Router, body: Value) -> (StatusCode, Value) {
    let request = Request::post("/v1/leases")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn get_text(router: &Router, uri: &str) -> String {
    let response = router
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn report(proxy: &str, active: u32, rejected: u32, share: Option<u32>) -> Value {
    let mut hunt = json!({"active": active, "rejected": rejected});
    if let Some(share) = share {
        hunt["share"] = json!(share);
    }
    json!({"proxy": proxy, "hunts": {"h1": hunt}})
}

#[tokio::test]
async fn a_new_governor_learns_then_grants_shares_within_the_fleet_limit() {
    let f = fixture();
    // Learning: a fresh governor grants nothing it cannot know is free.
    let (status, answer) = post(&f.router, report("a", 0, 50, None)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["leases"]["hunts"]["h1"]["share"], 0);
    assert_eq!(
        answer["hunts"]["h1"]["limit"], 100,
        "the document comes along"
    );
    f.clock.0.store(T0 + 6_000, Ordering::SeqCst);
    // Three proxies with equal demand; each acknowledges its last grant. The
    // first come get seats first; the third gets its part once the others
    // acknowledged smaller shares. Never more than the limit in sum.
    let mut shares = [0u64; 3];
    for round in 0..6 {
        for (i, proxy) in ["a", "b", "c"].iter().enumerate() {
            let ack = u32::try_from(shares[i]).unwrap();
            let (_, answer) = post(&f.router, report(proxy, 0, 50, Some(ack))).await;
            shares[i] = answer["leases"]["hunts"]["h1"]["share"].as_u64().unwrap();
            assert!(
                shares.iter().sum::<u64>() <= 100,
                "round {round}: {shares:?}"
            );
        }
        f.clock.0.fetch_add(1_000, Ordering::SeqCst);
    }
    assert!(
        shares.iter().all(|s| *s >= 30),
        "max-min fair in the end: {shares:?}"
    );
    assert_eq!(
        post(&f.router, report("a", 0, 0, None)).await.1["leases"]["lease_ms"],
        5000
    );
    let fleet: Value = serde_json::from_str(&get_text(&f.router, "/v1/fleet").await).unwrap();
    assert_eq!(fleet["hunts"]["h1"]["limit"], 100);
    assert!(fleet["hunts"]["h1"]["committed"].as_u64().unwrap() <= 100);
    let metrics = get_text(&f.router, "/metrics").await;
    assert!(
        metrics.contains("huntgate_fleet_limit{hunt=\"h1\"} 100"),
        "{metrics}"
    );
    assert!(metrics.contains("huntgate_fleet_proxy_share{hunt=\"h1\",proxy=\"b\"}"));
    promtool_check(&metrics);
}

#[tokio::test]
async fn bad_reports_are_refused_naming_the_field() {
    let f = fixture();
    let (status, answer) = post(&f.router, json!({"proxy": "", "hunts": {}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        answer["error"].as_str().unwrap().contains("proxy"),
        "{answer}"
    );
    let (status, answer) = post(
        &f.router,
        json!({"proxy": "a", "hunts": {"a b": {"active": 1, "rejected": 0}}}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        answer["error"].as_str().unwrap().contains("hunts.a b"),
        "{answer}"
    );
    let (status, _) = post(
        &f.router,
        json!({"proxy": "a", "hunts": {"h1": {"active": -1}}}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
