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

use huntgate_core::engine::{decision, Effects, Event};
use huntgate_core::throttle::publish;
use huntgate_core::ticket::TicketError;

#[path = "support/counted.rs"]
mod counted;
#[path = "support/proxy.rs"]
mod proxy;
use counted::Counted;
use proxy::{headers, ticket_of, Proxy, NOW};

impl Proxy {
    /// A proxy with a 10 s session TTL and `extra` in its configuration.
    fn new(extra: &str) -> Self {
        Self::with_ttl(10, extra)
    }

    fn reconfigure(&mut self, extra: &str) {
        self.reconfigure_with_ttl(10, extra);
    }

    /// Sends a GET on worker `w` (alternating workers is what Envoy does).
    fn send(
        &mut self,
        w: usize,
        path: &str,
        hunter: Option<&str>,
        ticket: Option<&str>,
        now: u64,
    ) -> Effects {
        self.handle(w, &headers("GET", path, hunter, ticket), now)
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
        assert_eq!((e.event, e.decision), (Event::Session, None));
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

/// The `active` count in the 429 a newcomer gets from a full hunt `h1`.
fn active_when_full(p: &mut Proxy, now: u64) -> u64 {
    let e = p.send(1, "/hunts/h1/join", Some("newcomer"), None, now);
    assert_eq!(e.event, Event::Rejected, "the hunt is not full");
    let body: serde_json::Value = serde_json::from_str(&e.reply.unwrap().body).unwrap();
    body["active"].as_u64().unwrap()
}

#[test]
fn the_ticket_a_renewal_replaced_gives_nothing_beyond_its_session() {
    // Replays after renewal (issue 13 §3): the old ticket stays alice's session until its
    // own expiry, never a second seat; it is nothing for anyone else; expired, it makes
    // alice a returning hunter on her one seat; the renewed ticket keeps working.
    let mut p = Proxy::new(r#","max_hunters":1"#);
    let old = ticket_of(&p.join(0, "alice"));
    let renewed = ticket_of(&p.send(1, "/hunts/h1/move", Some("alice"), Some(&old), NOW + 9_000));
    assert_ne!(old, renewed);
    let replay = p.send(0, "/hunts/h1/move", Some("alice"), Some(&old), NOW + 9_500);
    assert!(
        matches!(replay.event, Event::Session | Event::Renewed),
        "{:?}",
        replay.event
    );
    let stolen = p.send(1, "/hunts/h1/move", Some("bob"), Some(&old), NOW + 9_600);
    assert_eq!(
        (stolen.event, stolen.ticket_refused),
        (Event::Rejected, Some(TicketError::OtherHunter))
    );
    assert_eq!(active_when_full(&mut p, NOW + 9_700), 1);
    let expired = p.send(0, "/hunts/h1/move", Some("alice"), Some(&old), NOW + 10_001);
    assert_eq!(expired.ticket_refused, Some(TicketError::Expired));
    assert_ne!(expired.event, Event::Rejected, "alice lost her own seat");
    assert_eq!(active_when_full(&mut p, NOW + 10_002), 1);
    let e = p.send(
        1,
        "/hunts/h1/move",
        Some("alice"),
        Some(&renewed),
        NOW + 10_003,
    );
    assert_eq!(e.event, Event::Session);
    assert_eq!(active_when_full(&mut p, NOW + 10_004), 1);
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
    let mut p = Proxy::new(r#","max_tracked_hunts":1,"untracked_hunts":"pass""#);
    assert_eq!(p.join(0, "a").event, Event::Admitted);
    let e = p.send(0, "/hunts/h2/join", Some("a"), None, NOW);
    assert_eq!(
        (e.event, e.decision),
        (Event::Untracked, Some(decision::UNTRACKED))
    );
    // The default refuses what it cannot count.
    let mut strict = Proxy::new(r#","max_tracked_hunts":1"#);
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

/// Fills every slot with junk hunts, one session each, by one hunter.
fn fill_registry_with_junk(p: &mut Proxy, slots: usize) {
    for i in 0..slots + 6 {
        p.send(i, &format!("/hunts/junk{i}/x"), Some("mallory"), None, NOW);
    }
}

fn admitted_of(p: &mut Proxy, hunt: &str, joiners: usize, now: u64) -> usize {
    (0..joiners)
        .filter(|i| {
            let e = p.send(
                *i,
                &format!("/hunts/{hunt}/join"),
                Some(&format!("p{i}")),
                None,
                now,
            );
            e.event == Event::Admitted
        })
        .count()
}

#[test]
fn registry_exhaustion_never_makes_a_new_hunt_unlimited() {
    // Issue 9 #3: 1,030 junk hunts filled the registry, then a new hunt with
    // max 3 admitted 10 of 10 uncounted, until Envoy restarted.
    let mut p = Proxy::new(r#","max_tracked_hunts":8,"max_hunters":3"#);
    fill_registry_with_junk(&mut p, 8);
    // While the junk sessions live, the new hunt cannot be counted: refused, not passed.
    let e = p.send(0, "/hunts/launch/join", Some("p0"), None, NOW + 1);
    assert_eq!(
        (e.event, e.reply.map(|r| r.status)),
        (Event::Untracked, Some(503))
    );
    // Once they expired, their slots are reused and the new hunt is enforced.
    let later = NOW + 11_000;
    p.workers[0].tick(&p.config, &p.shared, later).unwrap();
    assert_eq!(admitted_of(&mut p, "launch", 10, later), 3);
}

#[test]
fn a_hunt_the_governor_lists_takes_a_slot_even_from_live_junk() {
    let mut p = Proxy::new(r#","max_tracked_hunts":8,"max_hunters":3"#);
    fill_registry_with_junk(&mut p, 8);
    publish(
        &p.shared,
        br#"{"version":1,"hunts":{"Launch":{"ratio":1.0}}}"#,
        NOW,
    )
    .unwrap();
    assert_eq!(admitted_of(&mut p, "launch", 10, NOW + 1), 3);
    // The evicted junk hunt's ticket holder keeps playing (renewed, uncounted).
    let report = p.workers[0].tick(&p.config, &p.shared, NOW + 2).unwrap();
    assert!(report
        .gauges
        .iter()
        .any(|g| g.hunt == "launch" && g.active == 3));
}

#[test]
fn a_reused_slot_starts_empty_and_stale_workers_cannot_count_into_it() {
    let mut p = Proxy::new(r#","max_tracked_hunts":1,"max_hunters":2"#);
    // Worker 1 learns old -> slot 0.
    let old = p.send(1, "/hunts/old/join", Some("a"), None, NOW);
    assert_eq!(old.event, Event::Admitted);
    // The session expires; worker 0 sweeps and gives the slot to `new`.
    let later = NOW + 11_000;
    p.workers[0].tick(&p.config, &p.shared, later).unwrap();
    assert_eq!(admitted_of(&mut p, "new", 1, later), 1);
    // Worker 1 still believes `old` owns slot 0: its join must not count into `new`.
    let e = p.send(1, "/hunts/old/join", Some("b"), None, later);
    assert_eq!(e.event, Event::Untracked);
    let report = p.workers[0].tick(&p.config, &p.shared, later + 1).unwrap();
    let new = report.gauges.iter().find(|g| g.hunt == "new").unwrap();
    assert_eq!(new.active, 1, "only new's own session counts");
    // And `new` still admits exactly up to its limit of 2 (p0 re-joins, p1 is new).
    assert_eq!(admitted_of(&mut p, "new", 5, later + 2), 2);
    let report = p.workers[0].tick(&p.config, &p.shared, later + 3).unwrap();
    assert_eq!(report.gauges[0].active, 2);
}

#[test]
fn a_ticket_holder_of_an_evicted_hunt_keeps_playing() {
    let mut p = Proxy::new(r#","max_tracked_hunts":1,"max_hunters":3"#);
    let ticket = ticket_of(&p.join(0, "alice"));
    publish(
        &p.shared,
        br#"{"version":1,"hunts":{"vip":{"ratio":1.0}}}"#,
        NOW,
    )
    .unwrap();
    assert_eq!(admitted_of(&mut p, "vip", 1, NOW + 1), 1);
    // alice's renewal finds no slot for h1: renewed uncounted, never refused.
    let e = p.send(
        1,
        "/hunts/h1/move",
        Some("alice"),
        Some(&ticket),
        NOW + 9_000,
    );
    assert_eq!((e.event, e.decision), (Event::Renewed, None));
}

#[test]
fn an_invalid_ticket_does_not_hide_a_valid_one() {
    // Issue 9 #4: only the first ticket was checked.
    let mut p = Proxy::new(r#","max_hunters":1"#);
    let valid = ticket_of(&p.join(0, "alice"));
    let expired = {
        let mut q = Proxy::new(r#","max_hunters":1"#);
        ticket_of(&q.send(0, "/hunts/h1/join", Some("alice"), None, NOW - 20_000))
    };
    let headers = [
        (":path", "/hunts/h1/move".to_string()),
        ("x-veltrix-hunter", "alice".to_string()),
        ("x-huntgate-ticket", expired.clone()),
        ("x-huntgate-ticket", valid.clone()),
    ];
    let e = p.workers[1].handle(&p.config, &p.shared, &headers, NOW + 1, &mut String::new);
    assert_eq!((e.event, e.ticket_refused), (Event::Session, None));
    let cookies = [
        (":path", "/hunts/h1/move".to_string()),
        ("x-veltrix-hunter", "alice".to_string()),
        (
            "cookie",
            format!("huntgate.h1={expired}; huntgate.h1={valid}"),
        ),
    ];
    let e = p.workers[0].handle(&p.config, &p.shared, &cookies, NOW + 1, &mut String::new);
    assert_eq!(e.event, Event::Session);
}

#[test]
fn a_client_sent_decision_header_is_stripped_from_every_forwarded_request() {
    // Issue 9 #2: `/other` with `x-huntgate-decision: admitted` reached the upstream.
    let mut p = Proxy::new(r#","max_tracked_hunts":1,"untracked_hunts":"pass""#);
    let forged = [
        (":path", "/other".to_string()),
        ("x-huntgate-decision", "admitted".to_string()),
    ];
    let e = p.workers[0].handle(&p.config, &p.shared, &forged, NOW, &mut String::new);
    assert_eq!(e.event, Event::NotHunt);
    assert!(e.strip_decision && e.decision.is_none());
    let plain = [(":path", "/other".to_string())];
    let e = p.workers[0].handle(&p.config, &p.shared, &plain, NOW, &mut String::new);
    assert!(!e.strip_decision, "no header, nothing to remove");
}

#[test]
fn session_decisions_are_marked_upstream_only_when_configured() {
    // Default: every decision but `session` (the hot path's header write); a client's
    // own header is removed either way.
    let mut p = Proxy::new("");
    let ticket = ticket_of(&p.join(0, "alice"));
    let forged = [
        (":path", "/hunts/h1/move".to_string()),
        ("x-veltrix-hunter", "alice".to_string()),
        ("x-huntgate-ticket", ticket.clone()),
        ("x-huntgate-decision", "admitted".to_string()),
    ];
    let e = p.workers[1].handle(&p.config, &p.shared, &forged, NOW + 1, &mut String::new);
    assert_eq!((e.event, e.decision), (Event::Session, None));
    assert!(
        e.strip_decision,
        "the client's header never reaches the upstream"
    );
    let e = p.send(1, "/hunts/h1/move", Some("alice"), Some(&ticket), NOW + 1);
    assert!(
        !e.strip_decision && e.decision.is_none(),
        "no host call at all"
    );
    // Marked on request.
    p.reconfigure(r#","mark_decisions":["admitted","session"]"#);
    let e = p.send(1, "/hunts/h1/move", Some("alice"), Some(&ticket), NOW + 1);
    assert_eq!(
        (e.event, e.decision),
        (Event::Session, Some(decision::SESSION))
    );
    // And a decision left out is not marked.
    p.reconfigure(r#","mark_decisions":[]"#);
    let e = p.join(0, "bob");
    assert_eq!((e.event, e.decision), (Event::Admitted, None));
}

/// 10,000 listed hunts, none with a session: once the first tick has read every
/// hunt, a tick reads the `max_hunt_metrics` gauged hunts (100) and a handful of
/// process keys, not every hunt tracked (issue 12: the sweeper's work follows what
/// can expire). Configuring them is linear too (this test would not finish in
/// debug otherwise: each registration used to rebuild the worker's whole cache).
#[test]
fn an_idle_tick_reads_the_gauged_hunts_not_every_tracked_one() {
    let hunts: Vec<String> = (0..10_000).map(|i| format!(r#""t{i}":{{}}"#)).collect();
    let extra = format!(
        r#","max_tracked_hunts":10000,"hunts":{{{}}}"#,
        hunts.join(",")
    );
    let mut p = Proxy::with_ttl(600, &extra);
    let counted = Counted::new(&p.shared);
    let first = p.workers[0].tick(&p.config, &counted, NOW).unwrap();
    assert!(first.sweeper);
    assert_eq!(first.tracked_hunts, 10_000);
    assert!(
        counted.take().0 >= 10_000,
        "the first tick reads every hunt"
    );
    for second in 1..=5u64 {
        let report = p.workers[0]
            .tick(&p.config, &counted, NOW + second * 1_000)
            .unwrap();
        assert!(report.sweeper);
        let reads = counted.take().0;
        assert!(
            (100..=120).contains(&reads),
            "tick {second}: {reads} reads with 10,000 hunts tracked"
        );
    }
}
