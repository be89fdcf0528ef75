//! Ending a session before its TTL: by the upstream (the engine's `end_session`,
//! what the adapter calls on `session_end.header: end`) and by the client's leave
//! request. The slot frees at once, and the ended ticket counts as no ticket on
//! every worker (the request is a new join), while a re-join's ticket passes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use huntgate_core::config::Config;
use huntgate_core::engine::{Effects, Event};
use huntgate_core::shared_data::{MemorySharedData, StoreError};
use huntgate_core::store::{self, ENDED_SHARDS, MAX_ENDED_PER_SHARD};
use huntgate_core::ticket::{session_expiry_s, TicketError};

#[path = "support/proxy.rs"]
mod proxy;
use proxy::{headers, ticket_of, Proxy, NOW};

impl Proxy {
    /// A proxy with a 100 s session TTL (only an end frees a seat in these tests).
    fn new(extra: &str) -> Self {
        Self::with_ttl(100, extra)
    }

    fn request(
        &mut self,
        w: usize,
        method: &str,
        path: &str,
        hunter: Option<&str>,
        ticket: Option<&str>,
        now: u64,
    ) -> Effects {
        self.handle(w, &headers(method, path, hunter, ticket), now)
    }

    fn play(&mut self, w: usize, hunter: &str, ticket: Option<&str>, now: u64) -> Effects {
        self.request(w, "GET", "/hunts/h1/move", Some(hunter), ticket, now)
    }

    fn leave(&mut self, w: usize, hunter: &str, ticket: Option<&str>, now: u64) -> Effects {
        self.request(w, "POST", "/hunts/h1/leave", Some(hunter), ticket, now)
    }

    /// What the adapter does when the upstream's response says `x-huntgate-session: end`.
    fn upstream_ends(&mut self, w: usize, effects: &Effects, now: u64) -> bool {
        let session = effects.session.clone().expect("a session to end");
        self.workers[w % 2]
            .end_session(&self.config, &self.shared, &session, now)
            .unwrap()
            .freed
    }

    fn active(&mut self) -> u32 {
        let report = loop {
            let report = self.workers[0]
                .tick(&self.config, &self.shared, NOW)
                .unwrap();
            if report.sweeper {
                break report;
            }
        };
        report
            .gauges
            .iter()
            .find(|g| g.hunt == "h1")
            .unwrap()
            .active
    }
}

#[test]
fn the_upstream_ends_a_session_and_the_next_joiner_gets_its_slot_at_once() {
    let mut p = Proxy::new(r#","max_hunters":2"#);
    let alice = p.play(0, "alice", None, NOW);
    assert_eq!(alice.event, Event::Admitted);
    let ticket = ticket_of(&alice);
    assert_eq!(p.play(1, "bob", None, NOW).event, Event::Admitted);
    assert_eq!(p.play(0, "carol", None, NOW).event, Event::Rejected);
    assert_eq!(p.active(), 2);

    // Alice's next request passes on her ticket; its response ends her session.
    let played = p.play(1, "alice", Some(&ticket), NOW + 1_000);
    assert_eq!(played.event, Event::Session);
    assert!(p.upstream_ends(1, &played, NOW + 1_000));
    assert_eq!(p.active(), 1);

    // The freed slot goes to the next joiner, long before Alice's TTL.
    assert_eq!(p.play(0, "carol", None, NOW + 1_001).event, Event::Admitted);
    assert_eq!(p.active(), 2);
    assert_eq!(p.play(1, "dave", None, NOW + 1_002).event, Event::Rejected);
}

#[test]
fn an_ended_ticket_counts_as_no_ticket_on_every_worker() {
    let mut p = Proxy::new(r#","max_hunters":2"#);
    let ticket = ticket_of(&p.play(0, "alice", None, NOW));
    // Both workers have verified (and cached) the ticket before the end.
    for w in 0..2 {
        assert_eq!(p.play(w, "alice", Some(&ticket), NOW).event, Event::Session);
    }
    let played = p.play(0, "alice", Some(&ticket), NOW + 10);
    assert!(p.upstream_ends(0, &played, NOW + 10));
    assert_eq!(p.play(1, "bob", None, NOW + 20).event, Event::Admitted);
    assert_eq!(p.play(0, "carol", None, NOW + 20).event, Event::Admitted);

    // The hunt is full: the ended ticket is a new join, refused on both workers.
    for i in 0..6 {
        let e = p.play(i, "alice", Some(&ticket), NOW + 30 + i as u64);
        assert_eq!(e.event, Event::Rejected, "worker {}", i % 2);
        assert_eq!(e.ticket_refused, Some(TicketError::Ended));
        assert!(e.issue.is_none());
    }
    assert_eq!(p.active(), 2);
}

#[test]
fn after_an_end_the_hunter_may_join_again_and_the_new_ticket_passes() {
    let mut p = Proxy::new(r#","max_hunters":1"#);
    let old = ticket_of(&p.play(0, "alice", None, NOW));
    let played = p.play(0, "alice", Some(&old), NOW);
    assert!(p.upstream_ends(0, &played, NOW));
    assert_eq!(p.active(), 0);

    // The old ticket is a new join: admitted (there is room), counted, a new ticket,
    // even in the millisecond of the end.
    let again = p.play(1, "alice", Some(&old), NOW);
    assert_eq!(again.event, Event::Admitted);
    assert_eq!(again.ticket_refused, Some(TicketError::Ended));
    assert_eq!(p.active(), 1);
    let new = ticket_of(&again);
    for w in 0..2 {
        assert_eq!(p.play(w, "alice", Some(&new), NOW).event, Event::Session);
        let e = p.play(w, "alice", Some(&old), NOW + 1);
        assert_eq!(e.ticket_refused, Some(TicketError::Ended));
    }
    // One slot, still one hunter: the limit holds.
    assert_eq!(p.play(0, "bob", None, NOW + 2).event, Event::Rejected);
}

#[test]
fn a_renewal_past_an_end_is_a_new_join() {
    let mut p = Proxy::new(r#","max_hunters":1"#);
    let old = ticket_of(&p.play(0, "alice", None, NOW));
    let played = p.play(0, "alice", Some(&old), NOW);
    assert!(p.upstream_ends(0, &played, NOW));
    assert_eq!(p.play(1, "bob", None, NOW + 1).event, Event::Admitted);
    // Past half-life the old ticket would be renewed: it is ended, so it is a join.
    let e = p.play(1, "alice", Some(&old), NOW + 60_000);
    assert_eq!(
        (e.event, e.ticket_refused),
        (Event::Rejected, Some(TicketError::Ended))
    );
}

#[test]
fn the_end_of_one_hunter_leaves_the_others_playing() {
    let mut p = Proxy::new(r#","max_hunters":3"#);
    let a = ticket_of(&p.play(0, "alice", None, NOW));
    let b = ticket_of(&p.play(1, "bob", None, NOW));
    let played = p.play(0, "alice", Some(&a), NOW);
    p.upstream_ends(0, &played, NOW);
    for w in 0..2 {
        assert_eq!(p.play(w, "bob", Some(&b), NOW + 1).event, Event::Session);
    }
}

#[test]
fn a_leave_request_ends_the_session_and_frees_the_slot() {
    let mut p = Proxy::new(r#","max_hunters":1"#);
    let ticket = ticket_of(&p.play(0, "alice", None, NOW));
    assert_eq!(p.play(1, "bob", None, NOW).event, Event::Rejected);

    let left = p.leave(1, "alice", Some(&ticket), NOW + 5);
    assert_eq!(left.event, Event::Left);
    let reply = left.reply.expect("answered by the filter");
    assert_eq!(reply.status, 200);
    let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(body, serde_json::json!({"ended": true, "hunt": "h1"}));
    assert!(reply.headers.contains(&(
        "set-cookie",
        "huntgate.h1=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax".to_string()
    )));
    assert_eq!(p.active(), 0);
    assert_eq!(p.play(0, "bob", None, NOW + 6).event, Event::Admitted);

    // Leaving again with the ended ticket: no session.
    let again = p.leave(0, "alice", Some(&ticket), NOW + 7);
    assert_eq!(again.reply.unwrap().status, 403);
    assert_eq!(again.ticket_refused, Some(TicketError::Ended));
    let e = p.play(1, "alice", Some(&ticket), NOW + 8);
    assert_eq!(e.event, Event::Rejected);
}

#[test]
fn a_leave_request_needs_a_valid_ticket_of_the_hunter() {
    let mut p = Proxy::new(r#","max_hunters":5"#);
    let alice = ticket_of(&p.play(0, "alice", None, NOW));
    for (hunter, ticket) in [("alice", None), ("mallory", Some(alice.as_str()))] {
        let e = p.leave(1, hunter, ticket, NOW + 1);
        let reply = e.reply.expect("answered by the filter");
        assert_eq!(reply.status, 403, "{hunter}");
        let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": "no_session", "hunt": "h1"})
        );
    }
    // Nothing ended: Alice still plays.
    assert_eq!(
        p.play(1, "alice", Some(&alice), NOW + 2).event,
        Event::Session
    );
    assert_eq!(p.active(), 1);
}

#[test]
fn only_a_post_on_exactly_the_leave_path_is_a_leave() {
    let mut p = Proxy::new(r#","max_hunters":5"#);
    let t = ticket_of(&p.play(0, "alice", None, NOW));
    for (method, path) in [
        ("GET", "/hunts/h1/leave"),
        ("POST", "/hunts/h1/leave/"),
        ("POST", "/hunts/h1/rooms/leave"),
        ("POST", "/hunts/h1/leaves"),
    ] {
        let e = p.request(1, method, path, Some("alice"), Some(&t), NOW + 1);
        assert_eq!(e.event, Event::Session, "{method} {path}");
        assert!(e.reply.is_none());
    }
    let e = p.request(
        1,
        "POST",
        "/HUNTS/H1/Leave?now=1",
        Some("alice"),
        Some(&t),
        NOW + 2,
    );
    assert_eq!(e.event, Event::Left);

    let mut off = Proxy::new(r#","session_end":{"leave_path":null}"#);
    let t = ticket_of(&off.play(0, "alice", None, NOW));
    let e = off.leave(1, "alice", Some(&t), NOW + 1);
    assert_eq!((e.event, e.reply), (Event::Session, None));

    let mut custom = Proxy::new(r#","session_end":{"leave_path":"quit"}"#);
    let t = ticket_of(&custom.play(0, "alice", None, NOW));
    assert_eq!(
        custom.leave(1, "alice", Some(&t), NOW + 1).event,
        Event::Session
    );
    let e = custom.request(
        1,
        "POST",
        "/hunts/h1/quit",
        Some("alice"),
        Some(&t),
        NOW + 2,
    );
    assert_eq!(e.event, Event::Left);
}

#[test]
fn with_a_hunt_header_the_leave_request_is_post_on_the_leave_path() {
    let mut p = Proxy::new(r#","hunt":{"header":"x-hunt"},"max_hunters":1"#);
    let send = |p: &mut Proxy, w: usize, method: &str, path: &str, ticket: Option<&str>| {
        let mut headers = vec![
            (":method".to_string(), method.to_string()),
            (":path".to_string(), path.to_string()),
            ("x-hunt".to_string(), "h1".to_string()),
            ("x-veltrix-hunter".to_string(), "alice".to_string()),
        ];
        if let Some(t) = ticket {
            headers.push(("x-huntgate-ticket".to_string(), t.to_string()));
        }
        p.workers[w].handle(&p.config, &p.shared, &headers, NOW, &mut || "x".to_string())
    };
    let t = ticket_of(&send(&mut p, 0, "GET", "/play", None));
    assert_eq!(
        send(&mut p, 1, "POST", "/leave", Some(&t)).event,
        Event::Left
    );
    let e = send(&mut p, 0, "GET", "/play", Some(&t));
    assert_eq!(e.ticket_refused, Some(TicketError::Ended));
    assert_eq!(e.event, Event::Admitted);
}

#[test]
fn an_anonymous_session_ends_by_its_ticket() {
    let mut p = Proxy::new(r#","hunter":{"anonymous":true},"max_hunters":1"#);
    let joined = p.request(0, "GET", "/hunts/h1/move", None, None, NOW);
    assert_eq!(joined.event, Event::Admitted);
    let ticket = ticket_of(&joined);
    // The upstream may end it in the response to the join itself.
    assert!(p.upstream_ends(0, &joined, NOW));
    assert_eq!(p.active(), 0);
    let e = p.request(1, "GET", "/hunts/h1/move", None, Some(&ticket), NOW + 1);
    assert_eq!(e.ticket_refused, Some(TicketError::Ended));
    assert_eq!(e.event, Event::Admitted);
}

#[test]
fn a_version_1_ticket_is_ended_too() {
    let mut p = Proxy::new(r#","max_hunters":5"#);
    p.play(0, "alice", None, NOW);
    let v1 = p
        .config
        .ticket_keys
        .issue("h1", "alice", session_expiry_s(NOW, 100));
    let played = p.play(1, "alice", Some(&v1), NOW + 1);
    assert_eq!(played.event, Event::Session);
    assert!(p.upstream_ends(1, &played, NOW + 1));
    let e = p.play(0, "alice", Some(&v1), NOW + 2);
    assert_eq!(e.ticket_refused, Some(TicketError::Ended));
}

#[test]
fn ending_a_session_this_proxy_never_counted_frees_nothing_but_revokes_it() {
    // A ticket another proxy issued (same secrets): this process has no record.
    let mut p = Proxy::new(r#","max_hunters":5"#);
    let elsewhere = p
        .config
        .ticket_keys
        .issue_at("h1", "alice", session_expiry_s(NOW, 100), NOW);
    p.play(0, "bob", None, NOW);
    let played = p.play(0, "alice", Some(&elsewhere), NOW + 1);
    assert_eq!(played.event, Event::Session);
    assert!(!p.upstream_ends(0, &played, NOW + 1));
    assert_eq!(p.active(), 1);
    let e = p.play(1, "alice", Some(&elsewhere), NOW + 2);
    assert_eq!(
        (e.event, e.ticket_refused),
        (Event::Admitted, Some(TicketError::Ended))
    );
}

#[test]
fn the_ended_list_is_bounded_and_forgets_ends_whose_tickets_expired() {
    let shared = MemorySharedData::default();
    store::prepare_layout(&shared, 1, 0).unwrap();
    let keep_ms = 10_000;
    // Keys of one list: key % ENDED_SHARDS == 3.
    let key = |i: u64| i * u64::from(ENDED_SHARDS) + 3;
    for i in 0..MAX_ENDED_PER_SHARD as u64 {
        store::end_session(&shared, None, key(i), NOW, keep_ms).unwrap();
    }
    let full = store::end_session(&shared, None, key(99_999), NOW, keep_ms);
    assert!(matches!(full, Err(StoreError::Full(_))), "{full:?}");
    // Ending an already listed session again only moves its time.
    store::end_session(&shared, None, key(7), NOW + 1, keep_ms).unwrap();
    // Another list has room.
    store::end_session(&shared, None, 4, NOW, keep_ms).unwrap();
    // Once their tickets have expired, the old ends are dropped.
    store::end_session(&shared, None, key(99_999), NOW + keep_ms + 1, keep_ms).unwrap();
    let left = store::ended_sessions(&shared, 3).unwrap();
    assert_eq!(left.len(), 2, "{left:?}");
}

#[test]
fn a_full_ended_list_refuses_the_leave_and_keeps_the_session_counted() {
    let mut p = Proxy::new(r#","max_hunters":5"#);
    let ticket = ticket_of(&p.play(0, "alice", None, NOW));
    let key = store::hunter_key("h1", "alice");
    let shard = u64::from(store::ended_shard_of(key));
    for i in 1..=MAX_ENDED_PER_SHARD as u64 {
        let other = i * u64::from(ENDED_SHARDS) + shard;
        store::end_session(&p.shared, None, other, NOW, 1_000_000).unwrap();
    }
    let e = p.leave(1, "alice", Some(&ticket), NOW + 1);
    assert_eq!(e.event, Event::StoreFailed);
    assert_eq!(e.reply.unwrap().status, 503);
    assert!(matches!(e.error, Some(StoreError::Full(_))));
    // Not ended: still counted, the ticket still passes.
    assert_eq!(p.active(), 1);
    assert_eq!(
        p.play(0, "alice", Some(&ticket), NOW + 2).event,
        Event::Session
    );
}

#[test]
fn session_end_fields_are_validated_naming_the_field() {
    let compile = |extra: &str| {
        Config::from_json(
            format!(r#"{{"standalone":true,"ticket_secrets":["0123456789abcdef"]{extra}}}"#)
                .as_bytes(),
        )
    };
    for (extra, field) in [
        (r#","session_end":{"header":""}"#, "session_end.header"),
        (
            r#","session_end":{"header":":status"}"#,
            "session_end.header",
        ),
        (
            r#","session_end":{"header":"x-huntgate-ticket"}"#,
            "session_end.header",
        ),
        (
            r#","session_end":{"header":"x-veltrix-hunter"}"#,
            "session_end.header",
        ),
        (
            r#","session_end":{"leave_path":"a/b"}"#,
            "session_end.leave_path",
        ),
        (
            r#","session_end":{"leave_path":".."}"#,
            "session_end.leave_path",
        ),
        (
            r#","session_end":{"leave_path":""}"#,
            "session_end.leave_path",
        ),
        (r#","session_end":{"other":1}"#, "session_end"),
    ] {
        let err = compile(extra).unwrap_err();
        assert!(err.field.starts_with(field), "{extra}: {err}");
    }
    // The end header is off by default (it costs a host call per hunt response).
    let c = compile("").unwrap();
    assert_eq!(c.session_end.header, None);
    assert!(c.session_end.leave.is_some());
    let c = compile(r#","session_end":{"header":"X-Game-Over","leave_path":null}"#).unwrap();
    assert_eq!(c.session_end.header.as_deref(), Some("x-game-over"));
    assert!(c.session_end.leave.is_none());
}
