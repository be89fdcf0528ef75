//! One worker's request handling end to end over the shared store: joins,
//! stickiness when the limit drops, shadow mode, anonymous sessions, expiry.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use huntgate_core::config::Config;
use huntgate_core::engine::{decision, Effects, Event, Worker};
use huntgate_core::shared_data::MemorySharedData;
use huntgate_core::throttle::publish;
use huntgate_core::ticket::TicketError;

const NOW: u64 = 1_800_000_000_000;

struct Proxy {
    config: Config,
    shared: MemorySharedData,
    workers: Vec<Worker>,
    minted: u32,
}

impl Proxy {
    fn new(extra: &str) -> Self {
        let config = Config::from_json(
            format!(r#"{{"ticket_secrets":["0123456789abcdef"],"session_ttl_s":10{extra}}}"#)
                .as_bytes(),
        )
        .unwrap();
        let shared = MemorySharedData::default();
        let mut workers = vec![Worker::new(1), Worker::new(2)];
        for w in &mut workers {
            w.configure(&config, &shared).unwrap();
        }
        Self {
            config,
            shared,
            workers,
            minted: 0,
        }
    }

    fn reconfigure(&mut self, extra: &str) {
        let fresh = Proxy::new(extra);
        self.config = fresh.config;
        for w in &mut self.workers {
            w.configure(&self.config, &self.shared).unwrap();
        }
    }

    /// Sends a request on worker `w` (alternating workers is what Envoy does).
    fn send(
        &mut self,
        w: usize,
        path: &str,
        hunter: Option<&str>,
        ticket: Option<&str>,
        now: u64,
    ) -> Effects {
        let mut headers = vec![(":path".to_string(), path.to_string())];
        if let Some(h) = hunter {
            headers.push(("x-veltrix-hunter".to_string(), h.to_string()));
        }
        if let Some(t) = ticket {
            headers.push(("x-huntgate-ticket".to_string(), t.to_string()));
        }
        let minted = &mut self.minted;
        let mut mint = || {
            *minted += 1;
            format!("anon-{minted}")
        };
        self.workers[w % 2].handle(&self.config, &self.shared, &headers, now, &mut mint)
    }

    fn join(&mut self, w: usize, hunter: &str) -> Effects {
        self.send(w, "/hunts/h1/join", Some(hunter), None, NOW)
    }
}

/// Changes one character in the middle of the ticket's MAC.
fn tamper_mac(ticket: &str) -> String {
    let (body, mac) = ticket.rsplit_once('.').unwrap();
    let mut mac: Vec<char> = mac.chars().collect();
    mac[5] = if mac[5] == 'A' { 'B' } else { 'A' };
    format!("{body}.{}", mac.into_iter().collect::<String>())
}

fn ticket_of(e: &Effects) -> String {
    e.issue.as_ref().expect("a ticket").ticket.clone()
}

#[test]
fn joins_fill_the_hunt_then_get_a_429_body() {
    let mut p = Proxy::new(r#","max_hunters":3"#);
    for i in 0..3 {
        let e = p.join(i, &format!("h{i}"));
        assert_eq!(
            (e.event, e.decision),
            (Event::Admitted, Some(decision::ADMITTED))
        );
        assert!(e.issue.as_ref().unwrap().cookie.starts_with("huntgate.h1="));
    }
    let e = p.join(1, "late");
    assert_eq!(e.event, Event::Rejected);
    let reply = e.reply.unwrap();
    assert_eq!(reply.status, 429);
    let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"error":"hunt_full","hunt":"h1","limit":3,"active":3,"retry_after_s":30})
    );
    assert!(reply.headers.contains(&("retry-after", "30".to_string())));
}

#[test]
fn admitted_hunters_keep_playing_when_the_limit_drops() {
    let mut p = Proxy::new(r#","max_hunters":5"#);
    let tickets: Vec<String> = (0..5)
        .map(|i| ticket_of(&p.join(i, &format!("h{i}"))))
        .collect();
    p.reconfigure(r#","max_hunters":2"#);
    for (i, t) in tickets.iter().enumerate() {
        let e = p.send(
            i,
            "/hunts/h1/move",
            Some(&format!("h{i}")),
            Some(t),
            NOW + 1_000,
        );
        assert_eq!(
            (e.event, e.decision),
            (Event::Session, Some(decision::SESSION))
        );
    }
    let e = p.join(0, "newcomer");
    assert_eq!(e.event, Event::Rejected);
    assert!(e.reply.unwrap().body.contains(r#""limit":2"#));
}

#[test]
fn governor_ratio_lowers_the_limit_and_bad_documents_are_ignored() {
    let mut p = Proxy::new(r#","max_hunters":10"#);
    publish(
        &p.shared,
        br#"{"version":1,"hunts":{"h1":{"ratio":0.25}}}"#,
        NOW,
    )
    .unwrap();
    for i in 0..2 {
        assert_eq!(p.join(i, &format!("h{i}")).event, Event::Admitted);
    }
    let e = p.join(0, "third");
    assert!(e.reply.unwrap().body.contains(r#""limit":2"#));
    publish(&p.shared, br#"{"hunts":{"h1":{"ratio":7}}}"#, NOW).unwrap();
    let e = p.join(0, "fourth");
    assert!(
        e.reply.unwrap().body.contains(r#""limit":2"#),
        "last good document stays"
    );
}

#[test]
fn a_returning_hunter_without_ticket_reuses_their_slot() {
    let mut p = Proxy::new(r#","max_hunters":1"#);
    assert_eq!(p.join(0, "alice").event, Event::Admitted);
    let e = p.join(1, "alice");
    assert_eq!(e.event, Event::Admitted);
    assert!(e.issue.is_some());
    assert_eq!(p.join(0, "bob").event, Event::Rejected);
}

#[test]
fn foreign_forged_and_expired_tickets_count_as_no_ticket() {
    let mut p = Proxy::new(r#","max_hunters":1"#);
    let alice = ticket_of(&p.join(0, "alice"));
    let other_hunt = ticket_of(&p.send(0, "/hunts/h2/join", Some("bob"), None, NOW));
    let cases = [
        (Some("bob"), alice.clone(), TicketError::OtherHunter),
        (Some("bob"), other_hunt, TicketError::OtherHunt),
        (Some("bob"), tamper_mac(&alice), TicketError::BadSignature),
    ];
    for (hunter, ticket, why) in cases {
        let e = p.send(1, "/hunts/h1/move", hunter, Some(&ticket), NOW + 1);
        assert_eq!(e.ticket_refused, Some(why));
        assert_eq!(
            e.event,
            Event::Rejected,
            "{why:?} must be treated as a new join"
        );
    }
    let e = p.send(
        1,
        "/hunts/h1/move",
        Some("alice"),
        Some(&alice),
        NOW + 10_001,
    );
    assert_eq!(e.ticket_refused, Some(TicketError::Expired));
}

#[test]
fn activity_renews_the_ticket_and_keeps_the_slot() {
    let mut p = Proxy::new(r#","max_hunters":1"#);
    let t = ticket_of(&p.join(0, "alice"));
    let e = p.send(1, "/hunts/h1/move", Some("alice"), Some(&t), NOW + 9_000);
    assert_eq!(e.event, Event::Renewed);
    let renewed = ticket_of(&e);
    // The sweep at the first expiry keeps the renewed session.
    let report = p.workers[0]
        .tick(&p.config, &p.shared, NOW + 11_000)
        .unwrap();
    assert_eq!(report.expired, 0);
    let e = p.send(
        0,
        "/hunts/h1/move",
        Some("alice"),
        Some(&renewed),
        NOW + 12_000,
    );
    assert_eq!(e.event, Event::Session);
}

#[test]
fn a_silent_hunter_frees_the_slot_at_the_next_sweep() {
    let mut p = Proxy::new(r#","max_hunters":1"#);
    p.join(0, "alice");
    assert_eq!(p.join(0, "bob").event, Event::Rejected);
    let report = p.workers[1]
        .tick(&p.config, &p.shared, NOW + 10_000)
        .unwrap();
    assert!(report.sweeper);
    assert_eq!(report.expired, 1);
    assert_eq!(report.gauges[0].active, 0);
    let e = p.send(0, "/hunts/h1/join", Some("bob"), None, NOW + 10_001);
    assert_eq!(e.event, Event::Admitted);
}

#[test]
fn only_one_worker_sweeps_per_lease() {
    let mut p = Proxy::new("");
    let first = p.workers[0].tick(&p.config, &p.shared, NOW).unwrap();
    let second = p.workers[1].tick(&p.config, &p.shared, NOW + 500).unwrap();
    assert!(first.sweeper && !second.sweeper);
}

#[test]
fn shadow_mode_never_rejects_and_marks_would_reject() {
    let mut p = Proxy::new(r#","max_hunters":1,"hunts":{"h1":{"mode":"shadow"}}"#);
    assert_eq!(p.join(0, "alice").event, Event::Admitted);
    let e = p.join(1, "bob");
    assert_eq!(e.event, Event::ShadowRejected);
    assert_eq!(e.decision, Some(decision::WOULD_REJECT));
    assert!(e.reply.is_none() && e.issue.is_none());
}

#[test]
fn anonymous_sessions_are_minted_and_sticky() {
    let mut p = Proxy::new(r#","max_hunters":1,"hunter":{"anonymous":true}"#);
    let e = p.send(0, "/hunts/h1/join", None, None, NOW);
    assert_eq!(e.event, Event::Admitted);
    let t = ticket_of(&e);
    let e = p.send(1, "/hunts/h1/move", None, Some(&t), NOW + 1);
    assert_eq!(e.event, Event::Session);
    assert_eq!(
        p.send(1, "/hunts/h1/join", None, None, NOW + 2).event,
        Event::Rejected
    );
}

#[test]
fn past_the_tracked_hunt_cap_new_hunts_follow_the_untracked_policy() {
    let mut p = Proxy::new(r#","max_tracked_hunts":1"#);
    assert_eq!(p.join(0, "a").event, Event::Admitted);
    let e = p.send(0, "/hunts/h2/join", Some("a"), None, NOW);
    assert_eq!(
        (e.event, e.decision),
        (Event::Untracked, Some(decision::UNTRACKED))
    );
    let mut strict = Proxy::new(r#","max_tracked_hunts":1,"untracked_hunts":"reject""#);
    strict.join(0, "a");
    let e = strict.send(0, "/hunts/h2/join", Some("a"), None, NOW);
    assert_eq!(e.reply.unwrap().status, 503);
}

#[test]
fn requests_outside_hunts_pass_untouched() {
    let mut p = Proxy::new("");
    let e = p.send(0, "/static/app.js", None, None, NOW);
    assert_eq!(e.event, Event::NotHunt);
    assert!(e.decision.is_none() && e.reply.is_none());
}
