//! Fleet leases in the filter (`governor.leases: true`): the share a proxy
//! enforces, the safe share without a live lease, the report it sends.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use huntgate_core::config::Config;
use huntgate_core::engine::{Event, Worker};
use huntgate_core::fetcher::{FetchResult, Fetcher};
use huntgate_core::lease::HuntReport;
use huntgate_core::shared_data::MemorySharedData;

const NOW: u64 = 1_800_000_000_000;

fn config(extra: &str) -> Config {
    Config::from_json(
        format!(
            r#"{{"ticket_secrets":["0123456789abcdef"],"max_hunters":100,
                "governor":{{"cluster":"gov","leases":true,"proxy_id":"gw-1"{extra}}}}}"#
        )
        .as_bytes(),
    )
    .unwrap()
}

struct Proxy {
    config: Config,
    shared: MemorySharedData,
    worker: Worker,
    fetcher: Fetcher,
}

impl Proxy {
    fn new(extra: &str) -> Self {
        let config = config(extra);
        let shared = MemorySharedData::default();
        let mut worker = Worker::new(1);
        worker.configure(&config, &shared, NOW).unwrap();
        Self {
            config,
            shared,
            worker,
            fetcher: Fetcher::default(),
        }
    }

    fn join(&mut self, hunt: &str, hunter: &str, now: u64) -> Event {
        let headers = [
            (":path", format!("/hunts/{hunt}/join")),
            ("x-veltrix-hunter", hunter.to_string()),
        ];
        self.worker
            .handle(&self.config, &self.shared, &headers, now, &mut String::new)
            .event
    }

    /// One exchange sent at `sent`, answered with `document` at `sent + 5`.
    fn exchange(&mut self, sent: u64, document: &str) -> (Vec<u8>, FetchResult) {
        let feed = self.config.governor.clone().unwrap();
        let (worker, shared, config) = (&mut self.worker, &self.shared, self.config.clone());
        let mut report = || {
            let lines = worker.lease_report(shared, sent).unwrap();
            let (ends, error) = worker.ends_report(&config, shared, sent);
            assert!(error.is_none(), "{error:?}");
            huntgate_core::lease::encode_report("gw-1", "envoy-1", 300, &lines, &ends)
        };
        let request = self.fetcher.poll(&feed, sent, &mut report).expect("due");
        let result = self.fetcher.on_response(
            &feed,
            &self.shared,
            sent + 5,
            Some(200),
            None,
            document.as_bytes(),
        );
        (request.body.expect("a report"), result)
    }
}

const GRANT_3: &str = r#"{"version":1,"hunts":{"h1":{"ratio":1.0,"max_hunters":1000}},
    "leases":{"lease_ms":5000,"hunts":{"h1":{"share":3}}}}"#;

#[test]
fn before_the_first_grant_a_proxy_admits_only_the_safe_share() {
    let mut p = Proxy::new("");
    assert_eq!(p.join("h1", "a", NOW), Event::Rejected, "safe share 0");
    let mut q = Proxy::new(r#","safe_share":1"#);
    assert_eq!(q.join("h1", "a", NOW), Event::Admitted);
    assert_eq!(q.join("h1", "b", NOW), Event::Rejected);
}

#[test]
fn a_proxy_enforces_exactly_its_granted_share() {
    let mut p = Proxy::new("");
    p.exchange(NOW, GRANT_3);
    let admitted = (0..10)
        .filter(|i| p.join("h1", &format!("p{i}"), NOW + 10) == Event::Admitted)
        .count();
    assert_eq!(admitted, 3);
}

#[test]
fn a_lease_that_is_not_renewed_falls_back_to_the_safe_share() {
    let mut p = Proxy::new(r#","safe_share":0"#);
    p.exchange(NOW, GRANT_3);
    assert_eq!(p.join("h1", "a", NOW + 4_999), Event::Admitted);
    // The lease counts from when the report was sent: NOW + 5000 is past it.
    assert_eq!(p.join("h1", "b", NOW + 5_000), Event::Rejected);
}

#[test]
fn a_hunt_the_governor_does_not_name_keeps_the_plugins_limit() {
    let mut p = Proxy::new("");
    p.exchange(NOW, GRANT_3);
    let admitted = (0..5)
        .filter(|i| p.join("other", &format!("p{i}"), NOW + 10) == Event::Admitted)
        .count();
    assert_eq!(
        admitted, 5,
        "ungoverned: the plugin's max_hunters, per process"
    );
}

#[test]
fn the_report_carries_sessions_unmet_demand_and_the_share_in_force() {
    let mut p = Proxy::new("");
    p.exchange(NOW, GRANT_3);
    for i in 0..5 {
        p.join("h1", &format!("p{i}"), NOW + 10);
    }
    // Rejections are batched per worker and flushed on its tick.
    p.worker.tick(&p.config, &p.shared, NOW + 20).unwrap();
    let lines = p.worker.lease_report(&p.shared, NOW + 30).unwrap();
    assert_eq!(
        lines,
        [HuntReport {
            hunt: "h1".into(),
            active: 3,
            rejected: 2,
            share: Some(3),
        }]
    );
    // Demand is what was rejected since the previous report.
    let again = p.worker.lease_report(&p.shared, NOW + 40).unwrap();
    assert_eq!(again[0].rejected, 0);
    let (body, result) = p.exchange(NOW + 1_000, GRANT_3);
    assert_eq!(result, FetchResult::Published(1));
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["proxy"], "gw-1");
    assert_eq!(body["session_ttl_s"], 300);
    assert_eq!(body["incarnation"], "envoy-1");
    assert_eq!(body["hunts"]["h1"]["active"], 3);
}

#[test]
fn the_lease_exchange_is_a_post_of_the_report_without_long_poll() {
    let c = config(r#","long_poll_s":25"#);
    let feed = c.governor.as_ref().unwrap();
    let mut f = Fetcher::default();
    let request = f.poll(feed, NOW, &mut || b"{}".to_vec()).unwrap();
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header(":method").as_deref(), Some("POST"));
    assert_eq!(header(":path").as_deref(), Some("/v1/leases"));
    assert!(header("if-none-match").is_none());
    assert_eq!(request.body.as_deref(), Some(&b"{}"[..]));
}

#[test]
fn lease_exchanges_start_one_poll_interval_apart_whatever_long_poll_s_says() {
    // Regression: with leases on and the default long_poll_s (25), a
    // successful exchange made the next one due at once, so each proxy
    // exchanged as fast as the governor answered (~2,000 a second).
    let mut p = Proxy::new(r#","long_poll_s":25,"poll_interval_ms":250"#);
    let feed = p.config.governor.clone().unwrap();
    p.exchange(NOW, GRANT_3);
    assert!(
        p.fetcher.poll(&feed, NOW + 5, &mut Vec::new).is_none(),
        "an exchange right after the answer"
    );
    assert!(p.fetcher.poll(&feed, NOW + 200, &mut Vec::new).is_none());
    assert!(p.fetcher.poll(&feed, NOW + 250, &mut Vec::new).is_some());
}

#[test]
fn lease_fields_are_validated_naming_the_field() {
    let bad = |extra: &str| {
        Config::from_json(
            format!(
                r#"{{"ticket_secrets":["0123456789abcdef"],"governor":{{"cluster":"g"{extra}}}}}"#
            )
            .as_bytes(),
        )
        .unwrap_err()
        .field
    };
    assert_eq!(bad(r#","proxy_id":"""#), "governor.proxy_id");
    assert_eq!(bad(r#","proxy_id":"a b""#), "governor.proxy_id");
    assert_eq!(bad(r#","leases_path":"x""#), "governor.leases_path");
    assert_eq!(bad(r#","safe_share":10000001"#), "governor.safe_share");
    let grant = br#"{"hunts":{},"leases":{"lease_ms":0,"hunts":{}}}"#;
    assert!(huntgate_core::throttle::ThrottleTable::decode(grant)
        .unwrap_err()
        .contains("lease_ms"));
}

#[test]
fn a_lease_answer_s_ends_are_handed_to_the_worker_and_its_shares_published() {
    let mut p = Proxy::new("");
    let answer = r#"{"version":3,"hunts":{"h1":{"ratio":1.0}},
        "leases":{"lease_ms":5000,"hunts":{"h1":{"share":4}}},
        "ends":{"cursor":"c-7","sessions":[["00000000000000ff",1800000000000]]}}"#;
    let (_, result) = p.exchange(NOW, answer);
    assert_eq!(result, FetchResult::Published(3));
    let ends = p.fetcher.take_fleet_ends().expect("the answer's ends");
    assert_eq!(ends.cursor, "c-7");
    assert_eq!(ends.sessions, vec![(0xff, NOW)]);
    assert!(p.fetcher.take_fleet_ends().is_none(), "taken once");
    let (published, _) = huntgate_core::shared_data::SharedData::get(
        &p.shared,
        huntgate_core::throttle::THROTTLE_KEY,
    )
    .unwrap()
    .unwrap();
    let published = String::from_utf8(published).unwrap();
    assert!(published.contains("\"share\":4"), "{published}");

    // The cursor goes back in the next report once the ends are recorded.
    p.worker
        .fleet_ends_received(&p.config, &p.shared, Some(ends), NOW + 5)
        .unwrap();
    let (report, _) = p.exchange(NOW + 1000, answer);
    let report: serde_json::Value = serde_json::from_slice(&report).unwrap();
    assert_eq!(report["ends_after"], "c-7");
}

#[test]
fn a_lease_answer_with_malformed_ends_is_refused_naming_the_field() {
    for (ends, field) in [
        (r#"{"sessions":[]}"#, "ends: missing field `cursor`"),
        (r#"{"cursor":"","sessions":[]}"#, "ends.cursor"),
        (
            r#"{"cursor":"c","sessions":[["ff",1]]}"#,
            "ends.sessions[0]",
        ),
        (
            r#"{"cursor":"c","sessions":[["00000000000000ff"]]}"#,
            "ends.sessions[0]",
        ),
        (
            r#"{"cursor":"c","sessions":[["00000000000000ff",-1]]}"#,
            "ends.sessions[0]",
        ),
        (r#"{"cursor":"c","sessions":{}}"#, "ends.sessions"),
    ] {
        let mut p = Proxy::new("");
        let answer =
            format!(r#"{{"version":3,"leases":{{"lease_ms":5000,"hunts":{{}}}},"ends":{ends}}}"#);
        let (_, result) = p.exchange(NOW, &answer);
        match result {
            FetchResult::Failed(why) => assert!(why.contains(field), "{ends}: {why}"),
            other => panic!("{ends}: {other:?}"),
        }
        assert!(p.fetcher.take_fleet_ends().is_none());
    }
}
