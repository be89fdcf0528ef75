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
use huntgate_governor::coordination::Coordination;
use huntgate_governor::governor::Governor;
use huntgate_governor::law::{HuntSpec, Knobs};
use huntgate_governor::policy::Policy;
use serde_json::{json, Value};
use support::{promtool_check, NoSources, RedisServer};
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
    replica(100, Arc::new(TestClock(AtomicU64::new(T0))), None)
}

/// A governor replica whose hunt `h1` has the fleet limit `limit`, on `clock`, keeping its
/// leases in `coordination` (or in memory).
fn replica(limit: u32, clock: Arc<TestClock>, coordination: Option<(&str, &str)>) -> Fixture {
    let mut policy = Policy::default();
    policy.hunts.insert(
        "h1".into(),
        HuntSpec {
            max_hunters: limit,
            min_hunters: 0,
            signals: vec![],
            knobs: Knobs::default(),
            pin_ratio: Some(1.0),
        },
    );
    let mut governor = Governor::new(policy, Arc::new(NoSources), 1, T0);
    governor.evaluate_with(vec![], T0);
    let (stop, shutdown) = watch::channel(false);
    let mut state = AppState::new(governor.subscribe(), shutdown).with_clock(clock.clone());
    if let Some((url, id)) = coordination {
        state = state.with_coordination(Arc::new(Coordination::new(url, id).unwrap()));
    }
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

fn share_of(answer: &Value) -> u32 {
    u32::try_from(answer["leases"]["hunts"]["h1"]["share"].as_u64().unwrap()).unwrap()
}

/// Rounds of exchanges by `proxies.len()` proxies that each ask for more than the limit
/// and acknowledge what they got; proxy i talks to `replicas[(i + round) % n]`, so every
/// proxy alternates between the replicas. Returns the largest Σ of enforced shares seen
/// after any exchange, and the shares at the end.
async fn alternate(
    replicas: &[&Fixture],
    clock: &TestClock,
    shares: &mut [u32],
    rounds: usize,
) -> u32 {
    let mut most = 0;
    for round in 0..rounds {
        for i in 0..shares.len() {
            let replica = replicas[(i + round) % replicas.len()];
            let proxy = format!("p{i}");
            let (status, answer) = post(
                &replica.router,
                report(&proxy, shares[i], 40, Some(shares[i])),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{answer}");
            // Sessions fill the share at once: a proxy is always full.
            shares[i] = share_of(&answer);
            most = most.max(shares.iter().sum());
        }
        clock.0.fetch_add(1_000, Ordering::SeqCst);
    }
    most
}

#[tokio::test]
async fn two_replicas_on_one_coordination_redis_never_grant_more_than_the_limit() {
    let redis = RedisServer::start("64mb");
    let clock = Arc::new(TestClock(AtomicU64::new(T0)));
    let a = replica(100, clock.clone(), Some((&redis.url, "ra")));
    let b = replica(100, clock.clone(), Some((&redis.url, "rb")));
    let mut shares = [0u32; 4];
    // A new coordination state learns first, whichever replica is asked.
    assert_eq!(alternate(&[&a, &b], &clock, &mut shares, 2).await, 0);
    clock.0.fetch_add(5_000, Ordering::SeqCst);
    let most = alternate(&[&a, &b], &clock, &mut shares, 12).await;
    assert!(most <= 100, "Σ shares reached {most}: {shares:?}");
    assert!(
        most >= 95,
        "the replicas filled only {most} of 100: {shares:?}"
    );
    // Both replicas show the same allocation.
    let view_a: Value = serde_json::from_str(&get_text(&a.router, "/v1/fleet").await).unwrap();
    let view_b: Value = serde_json::from_str(&get_text(&b.router, "/v1/fleet").await).unwrap();
    assert_eq!(view_a, view_b);
    assert!(view_a["hunts"]["h1"]["committed"].as_u64().unwrap() <= 100);
    let metrics = get_text(&b.router, "/metrics").await;
    assert!(
        metrics.contains("huntgate_fleet_coordination_up 1"),
        "{metrics}"
    );
    promtool_check(&metrics);

    // The same traffic over two replicas that each keep their own state: each grants the
    // whole limit, which is what the coordination Redis prevents.
    let clock = Arc::new(TestClock(AtomicU64::new(T0 + 6_000)));
    let lone_a = replica(100, clock.clone(), None);
    let lone_b = replica(100, clock.clone(), None);
    let mut lone = [0u32; 4];
    let most = alternate(&[&lone_a, &lone_b], &clock, &mut lone, 12).await;
    assert!(most > 100, "uncoordinated replicas stayed at {most}");
}

#[tokio::test]
async fn replicas_grant_against_the_lowest_limit_any_of_them_computed() {
    let redis = RedisServer::start("64mb");
    let clock = Arc::new(TestClock(AtomicU64::new(T0)));
    // Replica b has cut the hunt to 40 already; a still computes 100.
    let a = replica(100, clock.clone(), Some((&redis.url, "ra")));
    let b = replica(40, clock.clone(), Some((&redis.url, "rb")));
    let mut shares = [0u32; 4];
    alternate(&[&b, &a], &clock, &mut shares, 1).await;
    clock.0.fetch_add(6_000, Ordering::SeqCst);
    let most = alternate(&[&b, &a], &clock, &mut shares, 12).await;
    assert!(
        most <= 40,
        "Σ shares reached {most} with one replica at 40: {shares:?}"
    );
    assert!(most >= 36, "{shares:?}");
}

#[tokio::test]
async fn a_governor_restart_keeps_the_coordinated_leases_and_a_lost_redis_relearns() {
    let mut redis = RedisServer::start("64mb");
    let clock = Arc::new(TestClock(AtomicU64::new(T0)));
    let mut shares = [0u32; 3];
    {
        let a = replica(60, clock.clone(), Some((&redis.url, "ra")));
        alternate(&[&a], &clock, &mut shares, 1).await;
        clock.0.fetch_add(6_000, Ordering::SeqCst);
        alternate(&[&a], &clock, &mut shares, 8).await;
    }
    assert_eq!(shares.iter().sum::<u32>(), 60, "{shares:?}");
    // A restarted replica (new process, same Redis) finds every lease: the shares stay,
    // and a newcomer gets nothing that others still hold.
    let restarted = replica(60, clock.clone(), Some((&redis.url, "ra-2")));
    let mut with_newcomer = [shares[0], shares[1], shares[2], 0];
    let most = alternate(&[&restarted], &clock, &mut with_newcomer, 1).await;
    assert!(most <= 60);
    assert_eq!(
        &with_newcomer[..3],
        &shares[..],
        "shares kept across the restart"
    );

    // The coordination Redis goes away: exchanges answer 503 at once (proxies keep their
    // leases), and /metrics says so instead of showing an empty fleet.
    let port = redis.port;
    redis.kill();
    let (status, answer) = post(
        &restarted.router,
        report("p0", shares[0], 0, Some(shares[0])),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("coordination Redis"),
        "{answer}"
    );
    let metrics = get_text(&restarted.router, "/metrics").await;
    assert!(
        metrics.contains("huntgate_fleet_coordination_up 0"),
        "{metrics}"
    );
    assert!(!metrics.contains("huntgate_fleet_limit{"), "{metrics}");
    promtool_check(&metrics);

    // It comes back empty (no persistence): the state is new, so it learns: a proxy keeps
    // at most what it reports enforcing, a newcomer gets nothing.
    let _redis = RedisServer::start_on(port, "64mb");
    let mut after = [shares[0], shares[1], shares[2], 0];
    let (status, answer) = post(
        &restarted.router,
        report("p0", after[0], 40, Some(after[0])),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    after[0] = share_of(&answer);
    assert!(after[0] <= shares[0]);
    let (_, answer) = post(&restarted.router, report("p3", 0, 40, None)).await;
    assert_eq!(share_of(&answer), 0, "no new capacity while learning");
    let metrics = get_text(&restarted.router, "/metrics").await;
    assert!(
        metrics.contains("huntgate_fleet_learning{hunt=\"h1\"} 1"),
        "{metrics}"
    );
}

/// A report of `proxy` (no hunt) carrying `ends` and its cursor `after`.
fn ends_report(proxy: &str, ends: &[(&str, u64)], after: Option<&str>) -> Value {
    let mut body = json!({"proxy": proxy, "incarnation": format!("{proxy}-1"), "session_ttl_s": 100, "hunts": {}, "ends": ends});
    if let Some(after) = after {
        body["ends_after"] = json!(after);
    }
    body
}

/// The answer's ends (key, ms) and its cursor.
fn answer_ends(answer: &Value) -> (Vec<(String, u64)>, String) {
    let ends = &answer["ends"];
    let sessions = serde_json::from_value(ends["sessions"].clone()).expect("sessions");
    (
        sessions,
        ends["cursor"].as_str().expect("a cursor").to_owned(),
    )
}

/// Proxy `a` reports two ends, `b` one; each then learns only the other's, once, through
/// whichever of `routers` answers (taken in turn).
async fn ends_travel_between_two_proxies(routers: &[&Router]) {
    let (ka, kb, kc) = ("00000000000000aa", "00000000000000bb", "00000000000000cc");
    let mut turn = routers.iter().cycle();
    let (status, answer) = post(
        turn.next().unwrap(),
        ends_report("a", &[(ka, T0), (kb, T0 + 1)], None),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (own, cursor_a) = answer_ends(&answer);
    assert!(own.is_empty(), "a proxy is not sent its own ends: {own:?}");

    let (_, answer) = post(
        turn.next().unwrap(),
        ends_report("b", &[(kc, T0 + 2)], None),
    )
    .await;
    let (learnt, cursor_b) = answer_ends(&answer);
    assert_eq!(learnt, vec![(ka.into(), T0), (kb.into(), T0 + 1)]);

    let (_, answer) = post(turn.next().unwrap(), ends_report("a", &[], Some(&cursor_a))).await;
    let (learnt, cursor_a) = answer_ends(&answer);
    assert_eq!(learnt, vec![(kc.into(), T0 + 2)]);
    // Nothing new: nothing again, whichever replica answers.
    for _ in 0..2 {
        let (_, answer) = post(turn.next().unwrap(), ends_report("a", &[], Some(&cursor_a))).await;
        assert!(answer_ends(&answer).0.is_empty(), "{answer}");
        let (_, answer) = post(turn.next().unwrap(), ends_report("b", &[], Some(&cursor_b))).await;
        assert!(answer_ends(&answer).0.is_empty(), "{answer}");
    }
    // A restarted Envoy under the same id (another incarnation) learns its predecessor's.
    let mut restarted = ends_report("a", &[], None);
    restarted["incarnation"] = json!("a-2");
    let (_, answer) = post(turn.next().unwrap(), restarted).await;
    assert_eq!(answer_ends(&answer).0.len(), 3, "{answer}");
}

#[tokio::test]
async fn a_proxy_s_ends_reach_every_other_proxy_once_through_the_lease_exchange() {
    let f = fixture();
    ends_travel_between_two_proxies(&[&f.router]).await;
    let metrics = get_text(&f.router, "/metrics").await;
    assert!(
        metrics.contains("huntgate_fleet_ends_reported_total 3"),
        "{metrics}"
    );
    assert!(metrics.contains("huntgate_fleet_ends_held 3"), "{metrics}");
    promtool_check(&metrics);

    for (ends, field) in [
        (json!([["aa", 1]]), "ends[0]"),
        (
            json!([["00000000000000aa", 9_300_000_000_000_000_000_u64]]),
            "ends[0]",
        ),
    ] {
        let (status, answer) =
            post(&f.router, json!({"proxy": "a", "hunts": {}, "ends": ends})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(field),
            "{answer}"
        );
    }
    let many: Vec<(String, u64)> = (0..4097).map(|k| (format!("{k:016x}"), T0)).collect();
    let (status, answer) = post(&f.router, json!({"proxy": "a", "hunts": {}, "ends": many})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("ends"),
        "{answer}"
    );
}

#[tokio::test]
async fn two_replicas_on_one_coordination_redis_hand_out_the_same_ends() {
    let redis = RedisServer::start("64mb");
    let clock = Arc::new(TestClock(AtomicU64::new(T0)));
    let a = replica(100, clock.clone(), Some((&redis.url, "ra")));
    let b = replica(100, clock.clone(), Some((&redis.url, "rb")));
    ends_travel_between_two_proxies(&[&a.router, &b.router]).await;
}
