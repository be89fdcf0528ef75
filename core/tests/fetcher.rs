//! The governor feed: fetch scheduling, publication to every worker, staleness fallbacks.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use huntgate_core::config::Config;
use huntgate_core::fetcher::{FetchResult, Fetcher};
use huntgate_core::shared_data::MemorySharedData;
use huntgate_core::throttle::ThrottleCache;

const NOW: u64 = 1_800_000_000_000;
const DOC: &[u8] = br#"{"version":7,"generated_at_ms":1,"ttl_s":10,"default_ratio":1.0,
    "hunts":{"h1":{"max_hunters":100,"ratio":0.5,"limit":50,"reason":"redis_memory"}}}"#;

fn config(governor: &str) -> Config {
    Config::from_json(
        format!(
            r#"{{"ticket_secrets":["0123456789abcdef"],"max_hunters":10,
                "governor":{{"cluster":"gov"{governor}}}}}"#
        )
        .as_bytes(),
    )
    .unwrap()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn limit(
    cache: &mut ThrottleCache,
    shared: &MemorySharedData,
    c: &Config,
    now: u64,
) -> Option<u32> {
    cache.refresh(shared).unwrap();
    let settings = c.hunt_settings("h1").unwrap();
    cache.limit("h1", &settings, now, c.governor.as_ref())
}

#[test]
fn first_fetch_is_plain_then_long_polls_with_the_etag() {
    let c = config("");
    let feed = c.governor.as_ref().unwrap();
    let shared = MemorySharedData::default();
    huntgate_core::store::prepare_layout(&shared, 1, 0).unwrap();
    let mut f = Fetcher::default();
    let first = f.poll(feed, NOW, &mut Vec::new).unwrap();
    assert_eq!(header(&first.headers, ":path"), Some("/v1/throttle"));
    assert_eq!(header(&first.headers, ":authority"), Some("gov"));
    assert!(
        f.poll(feed, NOW + 100, &mut Vec::new).is_none(),
        "one call in flight at a time"
    );
    let r = f.on_response(feed, &shared, NOW + 10, Some(200), Some("\"7\""), DOC);
    assert_eq!(r, FetchResult::Published(7));
    let next = f.poll(feed, NOW + 10, &mut Vec::new).unwrap();
    assert_eq!(
        header(&next.headers, ":path"),
        Some("/v1/throttle?wait_s=25")
    );
    assert_eq!(header(&next.headers, "if-none-match"), Some("\"7\""));
    assert_eq!(next.timeout_ms, 2000 + 25_000);
}

#[test]
fn a_held_long_poll_is_reissued_at_once_a_quick_one_after_a_gap() {
    let c = config("");
    let feed = c.governor.as_ref().unwrap();
    let shared = MemorySharedData::default();
    huntgate_core::store::prepare_layout(&shared, 1, 0).unwrap();
    let mut f = Fetcher::default();
    f.poll(feed, NOW, &mut Vec::new).unwrap();
    f.on_response(feed, &shared, NOW + 10, Some(200), Some("\"7\""), DOC);
    // Held 12 s, then released by a change: the next long poll goes out now.
    f.poll(feed, NOW + 10, &mut Vec::new).unwrap();
    f.on_response(feed, &shared, NOW + 12_010, Some(200), Some("\"8\""), DOC);
    assert!(f.poll(feed, NOW + 12_010, &mut Vec::new).is_some());
    // Answered at once (a server that does not hold): not before a gap.
    f.on_response(feed, &shared, NOW + 12_015, Some(304), None, b"");
    assert!(
        f.poll(feed, NOW + 12_500, &mut Vec::new).is_none(),
        "no busy loop"
    );
    assert!(f.poll(feed, NOW + 13_010, &mut Vec::new).is_some());
    // A change that comes quickly after another is no busy loop: the next long
    // poll goes out at once, so the change after it is not held back a second.
    f.on_response(feed, &shared, NOW + 13_100, Some(200), Some("\"9\""), DOC);
    assert!(f.poll(feed, NOW + 13_100, &mut Vec::new).is_some());
    // The same document again, answered at once: a gap.
    f.on_response(feed, &shared, NOW + 13_105, Some(200), Some("\"9\""), DOC);
    assert!(f.poll(feed, NOW + 13_600, &mut Vec::new).is_none());
}

#[test]
fn a_published_document_reaches_every_worker_and_304_keeps_it_fresh() {
    let c = config(r#","max_stale_s":5,"on_stale":"fail_closed""#);
    let feed = c.governor.as_ref().unwrap();
    let shared = MemorySharedData::default();
    huntgate_core::store::prepare_layout(&shared, 1, 0).unwrap();
    let (mut w1, mut w2) = (ThrottleCache::default(), ThrottleCache::default());
    // No document yet: stale from the start, so the fallback applies.
    assert_eq!(limit(&mut w1, &shared, &c, NOW), Some(0));
    let mut f = Fetcher::default();
    f.poll(feed, NOW, &mut Vec::new);
    f.on_response(feed, &shared, NOW, Some(200), Some("\"7\""), DOC);
    assert_eq!(limit(&mut w1, &shared, &c, NOW + 1), Some(50));
    assert_eq!(limit(&mut w2, &shared, &c, NOW + 1), Some(50));
    f.poll(feed, NOW + 4_000, &mut Vec::new);
    assert_eq!(
        f.on_response(feed, &shared, NOW + 4_000, Some(304), None, b""),
        FetchResult::NotModified
    );
    assert_eq!(limit(&mut w2, &shared, &c, NOW + 8_000), Some(50));
    assert_eq!(
        limit(&mut w2, &shared, &c, NOW + 9_001),
        Some(0),
        "stale after 5 s"
    );
}

#[test]
fn failures_keep_the_last_good_document_until_max_stale() {
    let c = config(r#","max_stale_s":30,"on_stale":{"ratio":0.3}"#);
    let feed = c.governor.as_ref().unwrap();
    let shared = MemorySharedData::default();
    huntgate_core::store::prepare_layout(&shared, 1, 0).unwrap();
    let mut cache = ThrottleCache::default();
    let mut f = Fetcher::default();
    f.poll(feed, NOW, &mut Vec::new);
    f.on_response(feed, &shared, NOW, Some(200), None, DOC);
    for (status, body) in [
        (Some(503), &b"upstream connect error"[..]),
        (Some(200), &b"{not json"[..]),
        (Some(200), &br#"{"hunts":{"h1":{"ratio":-1}}}"#[..]),
        (None, &b""[..]),
    ] {
        let at = NOW + 1_000 + u64::from(f.consecutive_failures) * 1_000;
        assert!(f.poll(feed, at, &mut Vec::new).is_some());
        assert!(matches!(
            f.on_response(feed, &shared, at, status, None, body),
            FetchResult::Failed(_)
        ));
        assert_eq!(limit(&mut cache, &shared, &c, at), Some(50));
    }
    assert_eq!(f.consecutive_failures, 4);
    assert_eq!(
        limit(&mut cache, &shared, &c, NOW + 30_001),
        Some(30),
        "fallback ratio 0.3 of the governor's max_hunters 100 (not the plugin's 10)"
    );
}

#[test]
fn fail_open_lifts_the_limit_when_stale() {
    let c = config(r#","on_stale":"fail_open""#);
    let shared = MemorySharedData::default();
    huntgate_core::store::prepare_layout(&shared, 1, 0).unwrap();
    assert_eq!(limit(&mut ThrottleCache::default(), &shared, &c, NOW), None);
}

#[test]
fn dispatch_failure_retries_after_the_poll_interval() {
    let c = config(r#","poll_interval_ms":500"#);
    let feed = c.governor.as_ref().unwrap();
    let mut f = Fetcher::default();
    f.poll(feed, NOW, &mut Vec::new).unwrap();
    f.dispatch_failed(feed, NOW);
    assert!(f.poll(feed, NOW + 400, &mut Vec::new).is_none());
    assert!(f.poll(feed, NOW + 500, &mut Vec::new).is_some());
}

#[test]
fn plain_polls_start_one_interval_apart_whatever_the_response_time() {
    // The adapter polls on a timer of the poll interval: a period counted
    // from the response would skip every other tick.
    let c = config(r#","poll_interval_ms":1000,"long_poll_s":0"#);
    let feed = c.governor.as_ref().unwrap();
    let shared = MemorySharedData::default();
    huntgate_core::store::prepare_layout(&shared, 1, 0).unwrap();
    let mut f = Fetcher::default();
    f.poll(feed, NOW, &mut Vec::new).unwrap();
    f.on_response(feed, &shared, NOW + 40, Some(200), Some("\"7\""), DOC);
    assert!(
        f.poll(feed, NOW + 900, &mut Vec::new).is_none(),
        "not due before the interval"
    );
    let next = f
        .poll(feed, NOW + 1_000, &mut Vec::new)
        .expect("due one interval after the last start");
    f.on_response(feed, &shared, NOW + 1_040, Some(304), None, b"");
    assert!(header(&next.headers, "if-none-match").is_some());
    assert!(
        f.poll(feed, NOW + 1_999, &mut Vec::new).is_some(),
        "a tick a hair early still fetches"
    );
}

#[test]
fn governor_fields_are_validated_by_name() {
    for (extra, field) in [
        (r#","poll_interval_ms":5"#, "governor.poll_interval_ms"),
        (r#","long_poll_s":61"#, "governor.long_poll_s"),
        (r#","path":"v1""#, "governor.path"),
        (r#","on_stale":{"ratio":2}"#, "governor.on_stale.ratio"),
        (r#","max_stale_s":0"#, "governor.max_stale_s"),
    ] {
        let json = format!(
            r#"{{"ticket_secrets":["0123456789abcdef"],"governor":{{"cluster":"g"{extra}}}}}"#
        );
        let err = Config::from_json(json.as_bytes()).unwrap_err();
        assert_eq!(err.field, field, "{extra}");
    }
}

#[test]
fn a_304_with_another_etag_is_not_taken_as_unchanged() {
    // Issue 9 #5: a 304 with an unrelated ETag confirmed the document in force.
    let c = config(r#","max_stale_s":5"#);
    let feed = c.governor.as_ref().unwrap();
    let shared = MemorySharedData::default();
    huntgate_core::store::prepare_layout(&shared, 1, 0).unwrap();
    let mut f = Fetcher::default();
    f.poll(feed, NOW, &mut Vec::new);
    f.on_response(feed, &shared, NOW, Some(200), Some("\"7\""), DOC);
    f.poll(feed, NOW + 1_000, &mut Vec::new);
    assert!(matches!(
        f.on_response(feed, &shared, NOW + 1_000, Some(304), Some("\"8\""), b""),
        FetchResult::Failed(_)
    ));
    f.poll(feed, NOW + 3_000, &mut Vec::new);
    f.on_response(feed, &shared, NOW + 3_000, Some(200), Some("\"7\""), DOC);
    f.poll(feed, NOW + 4_000, &mut Vec::new);
    assert_eq!(
        f.on_response(feed, &shared, NOW + 4_000, Some(304), Some("\"7\""), b""),
        FetchResult::NotModified
    );
}

#[test]
fn governor_outage_keeps_the_governed_max_hunters() {
    // Issue 10 #1: a governor outage replaced a governed 100 x ratio by the
    // plugin's default max_hunters (10) x the fallback ratio.
    let c = config(r#","max_stale_s":5,"on_stale":{"ratio":0.3}"#);
    let feed = c.governor.as_ref().unwrap();
    let shared = MemorySharedData::default();
    huntgate_core::store::prepare_layout(&shared, 1, 0).unwrap();
    let mut f = Fetcher::default();
    f.poll(feed, NOW, &mut Vec::new);
    f.on_response(feed, &shared, NOW, Some(200), Some("\"7\""), DOC);
    let mut w = ThrottleCache::default();
    assert_eq!(limit(&mut w, &shared, &c, NOW + 1), Some(50));
    assert_eq!(
        limit(&mut w, &shared, &c, NOW + 6_000),
        Some(30),
        "stale: 0.3 of the governor's max_hunters 100, not of the plugin's 10"
    );
}

#[test]
fn only_the_answer_to_the_call_in_flight_is_awaited() {
    let c = config(r#","poll_interval_ms":500,"timeout_ms":1000,"long_poll_s":0"#);
    let feed = c.governor.as_ref().unwrap();
    let mut f = Fetcher::default();
    assert!(!f.is_awaited(1), "nothing in flight");
    f.poll(feed, NOW, &mut Vec::new).unwrap();
    f.dispatched(1);
    assert!(f.is_awaited(1));
    assert!(!f.is_awaited(2));
    // The call is given up as lost (timeout + 5 s) and a new one goes out.
    let next = f.poll(feed, NOW + 6_001, &mut Vec::new);
    assert!(next.is_some(), "a lost call is retried");
    f.dispatched(2);
    assert!(!f.is_awaited(1), "the late answer to the lost call");
    assert!(f.is_awaited(2));
    let shared = MemorySharedData::default();
    huntgate_core::store::prepare_layout(&shared, 1, 0).unwrap();
    f.on_response(feed, &shared, NOW + 6_040, Some(200), None, DOC);
    assert!(!f.is_awaited(2), "answered");
}
