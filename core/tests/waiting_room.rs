//! The waiting room: a full hunt queues its joiners and lets them in first come,
//! first served, on injected time, over two workers sharing one store. A newcomer
//! (or a later place) never overtakes a live place; places are bounded, expire,
//! drop out when their holder stops retrying; forged, other-hunt and
//! other-hunter queue tickets give nothing; the estimated wait is `p × T / n`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use huntgate_core::config::Config;
use huntgate_core::engine::{Effects, Event, QueueGauge};
use huntgate_core::ticket::TicketError;

#[path = "support/proxy.rs"]
mod proxy;
use proxy::{Proxy, NOW, SECRET};

/// A request's extras.
#[derive(Default, Clone)]
struct Req<'a> {
    hunter: Option<&'a str>,
    ticket: Option<&'a str>,
    queue: Option<&'a str>,
    queue_cookie: Option<&'a str>,
    html: bool,
    leave: bool,
}

impl Proxy {
    fn new(extra: &str) -> Self {
        Self::with_ttl(300, extra)
    }

    /// A hunt `h1` with `limit` seats and a waiting room with these fields.
    fn room(limit: u32, room: &str) -> Self {
        Self::with_ttl(
            300,
            &format!(r#","max_hunters":{limit},"waiting_room":{{"enabled":true{room}}}"#),
        )
    }

    fn send(&mut self, w: usize, req: &Req<'_>, now: u64) -> Effects {
        let path = if req.leave {
            "/hunts/h1/leave"
        } else {
            "/hunts/h1/join"
        };
        let method = if req.leave { "POST" } else { "GET" };
        let mut headers = vec![
            (":method".to_string(), method.to_string()),
            (":path".to_string(), path.to_string()),
        ];
        if let Some(h) = req.hunter {
            headers.push(("x-veltrix-hunter".to_string(), h.to_string()));
        }
        if let Some(t) = req.ticket {
            headers.push(("x-huntgate-ticket".to_string(), t.to_string()));
        }
        if let Some(q) = req.queue {
            headers.push(("x-huntgate-queue".to_string(), q.to_string()));
        }
        if let Some(q) = req.queue_cookie {
            headers.push(("cookie".to_string(), format!("a=b; huntgate-queue.h1={q}")));
        }
        if req.html {
            headers.push((
                "accept".to_string(),
                "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8".to_string(),
            ));
        }
        self.handle(w, &headers, now)
    }

    /// A join by `hunter` presenting its queue ticket `queue`, if any.
    fn join(&mut self, w: usize, hunter: &str, queue: Option<&str>, now: u64) -> Effects {
        let req = Req {
            hunter: Some(hunter),
            queue,
            ..Req::default()
        };
        self.send(w, &req, now)
    }

    fn leave(&mut self, w: usize, hunter: &str, ticket: &str, now: u64) {
        let req = Req {
            hunter: Some(hunter),
            ticket: Some(ticket),
            leave: true,
            ..Req::default()
        };
        assert_eq!(self.send(w, &req, now).event, Event::Left);
    }

    fn queue_gauge(&mut self, now: u64) -> (QueueGauge, u32, u32) {
        for _ in 0..4 {
            let report = self.workers[0]
                .tick(&self.config, &self.shared, now)
                .unwrap();
            if report.sweeper {
                let gauge = report.gauges.iter().find(|g| g.hunt == "h1").unwrap();
                return (
                    gauge.queue.unwrap(),
                    report.queue_dropped.abandoned,
                    report.queue_dropped.expired,
                );
            }
        }
        panic!("no sweeper");
    }
}

fn ticket_of(e: &Effects) -> String {
    e.issue.as_ref().expect("a session ticket").ticket.clone()
}

/// The queue ticket and the JSON body of a queued reply.
fn queued(e: &Effects) -> (String, serde_json::Value) {
    assert_eq!(e.event, Event::Queued, "{e:?}");
    let reply = e.reply.as_ref().unwrap();
    assert_eq!(reply.status, 429);
    let header = |name: &str| {
        reply
            .headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    };
    let ticket = header("x-huntgate-queue").expect("a queue ticket");
    let cookie = header("set-cookie").unwrap();
    assert!(cookie.starts_with(&format!("huntgate-queue.h1={ticket}; Path=/; Max-Age=")));
    assert_eq!(header("retry-after").unwrap(), "5");
    let body = if reply.body.starts_with('{') {
        serde_json::from_str(&reply.body).unwrap()
    } else {
        serde_json::Value::Null
    };
    (ticket, body)
}

fn position(e: &Effects) -> u64 {
    queued(e).1["position"].as_u64().unwrap()
}

/// Fills `h1` with `n` players, returning their session tickets.
fn fill(p: &mut Proxy, n: usize, now: u64) -> Vec<String> {
    (0..n)
        .map(|i| {
            let e = p.join(i, &format!("player-{i}"), None, now);
            assert_eq!(e.event, Event::Admitted, "{e:?}");
            ticket_of(&e)
        })
        .collect()
}

#[test]
fn waiting_room_config_defaults_inheritance_and_refusals_name_the_field() {
    let config = Config::from_json(
        format!(
            r#"{{"standalone":true,"ticket_secrets":["{SECRET}"],
                "waiting_room":{{"max_queue":50}},
                "hunts":{{"h1":{{"waiting_room":{{"enabled":true,"grace_s":3}}}},"h2":{{}}}}}}"#
        )
        .as_bytes(),
    )
    .unwrap();
    let h1 = config.waiting_room("h1").unwrap();
    assert_eq!(
        (h1.max_queue, h1.queue_ttl_s, h1.retry_after_s, h1.grace_s),
        (50, 1800, 5, 3)
    );
    assert!(h1.page.is_none());
    assert!(config.waiting_room("h2").is_none(), "off unless enabled");
    assert!(config.waiting_room("other").is_none());

    let refused = |json: &str| {
        let json = format!(r#"{{"standalone":true,"ticket_secrets":["{SECRET}"],{json}}}"#);
        let err = Config::from_json(json.as_bytes()).unwrap_err();
        (err.field, err.problem)
    };
    let (field, problem) = refused(r#""hunts":{"h1":{"waiting_room":{"max_queue":0}}}"#);
    assert_eq!(field, "hunts.h1.waiting_room.max_queue");
    assert_eq!(problem, "must be between 1 and 10000");
    assert_eq!(
        refused(r#""waiting_room":{"queue_ttl_s":0}"#).0,
        "waiting_room.queue_ttl_s"
    );
    assert_eq!(
        refused(r#""waiting_room":{"retry_after_s":301}"#).0,
        "waiting_room.retry_after_s"
    );
    assert_eq!(
        refused(r#""waiting_room":{"grace_s":3601}"#).0,
        "waiting_room.grace_s"
    );
    assert_eq!(
        refused(r#""waiting_room":{"page":""}"#).0,
        "waiting_room.page"
    );
    assert_eq!(
        refused(r#""waiting_room":{"size":1}"#).0,
        "waiting_room.size",
        "unknown fields are refused"
    );
    assert_eq!(
        refused(r#""hunter":{"header":"x-huntgate-queue"}"#).0,
        "hunter.header"
    );
}

#[test]
fn a_full_hunt_queues_joiners_and_admits_them_in_arrival_order_as_seats_free() {
    let mut p = Proxy::room(3, "");
    let players = fill(&mut p, 3, NOW);
    // Six joiners arrive in order, alternating workers: places 1..=6.
    let mut queue = Vec::new();
    for i in 0..6 {
        let e = p.join(i, &format!("q{i}"), None, NOW + 10 * i as u64);
        let (ticket, body) = queued(&e);
        assert_eq!(body["position"], i + 1);
        assert_eq!(body["hunt"], "h1");
        assert_eq!(body["error"], "queued");
        assert_eq!(body["retry_after_s"], 5);
        assert!(
            body["eta_s"].is_null(),
            "no seat has freed yet: no estimate"
        );
        assert_eq!(e.queue.queued, 1);
        queue.push(ticket);
    }
    // Each player leaves in turn; every queued hunter retries, the last first.
    let mut now = NOW + 1_000;
    let mut admitted = Vec::new();
    for (round, ticket) in players.iter().enumerate() {
        now += 1_000;
        p.leave(round, &format!("player-{round}"), ticket, now);
        for i in (0..6).rev() {
            if admitted.contains(&i) {
                continue;
            }
            let e = p.join(i + round, &format!("q{i}"), Some(&queue[i]), now);
            if e.event == Event::Admitted {
                assert_eq!(e.queue.dequeued, 1);
                let cookie = e.issue.as_ref().unwrap().queue_cookie.clone().unwrap();
                assert_eq!(
                    cookie,
                    "huntgate-queue.h1=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"
                );
                admitted.push(i);
            } else {
                // The head of this round has not come back yet: it still counts.
                assert_eq!(position(&e), (i + 1 - round) as u64, "round {round}, q{i}");
            }
        }
    }
    assert_eq!(admitted, vec![0, 1, 2], "admitted in arrival order");
}

#[test]
fn a_newcomer_is_queued_behind_a_live_queue_even_when_a_seat_is_free() {
    let mut p = Proxy::room(1, "");
    let alice = fill(&mut p, 1, NOW).remove(0);
    let bob = queued(&p.join(0, "bob", None, NOW)).0;
    p.leave(1, "player-0", &alice, NOW + 100);
    // The seat is free, but Bob's place is live: Carol queues behind him.
    let carol = p.join(1, "carol", None, NOW + 200);
    assert_eq!(position(&carol), 2);
    // Carol retries as fast as she likes, on both workers: she never gets in first.
    for i in 0..20 {
        let e = p.join(i, "carol", Some(&queued(&carol).0), NOW + 300 + i as u64);
        assert_eq!(position(&e), 2, "carol overtook bob");
    }
    let e = p.join(1, "bob", Some(&bob), NOW + 4_000);
    assert_eq!(e.event, Event::Admitted);
    // Now Carol is first; the hunt is full again, so she waits at place 1.
    assert_eq!(position(&p.join(0, "carol", None, NOW + 4_100)), 1);
}

#[test]
fn a_hunter_who_stops_retrying_drops_out_after_retry_after_plus_grace() {
    // retry_after 5 s + grace 10 s: silent for more than 15 s drops the place.
    let mut p = Proxy::room(1, "");
    let alice = fill(&mut p, 1, NOW).remove(0);
    queued(&p.join(0, "bob", None, NOW));
    let carol = queued(&p.join(1, "carol", None, NOW + 1)).0;
    p.leave(0, "player-0", &alice, NOW + 2);
    // Carol comes back in time, Bob does not: at 15 s Bob's place still holds her back.
    assert_eq!(position(&p.join(1, "carol", Some(&carol), NOW + 15_000)), 2);
    // Past 15 s since his last try, Bob's place is gone and Carol is admitted.
    let e = p.join(1, "carol", Some(&carol), NOW + 15_001);
    assert_eq!(e.event, Event::Admitted, "{e:?}");
    assert_eq!(e.queue.dropped.abandoned, 1);
    // Bob coming back later is a newcomer: the queue is empty, the hunt is full.
    let e = p.join(0, "bob", None, NOW + 16_000);
    assert_eq!(position(&e), 1);
    assert_eq!(e.queue.queued, 1);
}

#[test]
fn the_sweeper_drops_silent_hunters_and_reports_queue_length_and_oldest_wait() {
    let mut p = Proxy::room(1, r#","grace_s":0"#);
    fill(&mut p, 1, NOW);
    queued(&p.join(0, "bob", None, NOW));
    queued(&p.join(1, "carol", None, NOW + 2_000));
    let (gauge, abandoned, _) = p.queue_gauge(NOW + 3_000);
    assert_eq!(
        gauge,
        QueueGauge {
            length: 2,
            oldest_wait_ms: 3_000
        }
    );
    assert_eq!(abandoned, 0);
    // At 5.001 s Bob (last try at 0) is out; Carol (at 2 s) is not.
    let (gauge, abandoned, _) = p.queue_gauge(NOW + 5_001);
    assert_eq!(
        gauge,
        QueueGauge {
            length: 1,
            oldest_wait_ms: 3_001
        }
    );
    assert_eq!(abandoned, 1);
}

#[test]
fn a_place_expires_after_queue_ttl_s_and_its_ticket_then_gives_nothing() {
    let mut p = Proxy::room(1, r#","queue_ttl_s":60,"grace_s":3600"#);
    fill(&mut p, 1, NOW);
    let bob = queued(&p.join(0, "bob", None, NOW)).0;
    let carol = queued(&p.join(1, "carol", None, NOW + 1)).0;
    for t in (5_000..60_000).step_by(5_000) {
        assert_eq!(position(&p.join(0, "bob", Some(&bob), NOW + t)), 1);
        assert_eq!(position(&p.join(1, "carol", Some(&carol), NOW + t)), 2);
    }
    // At 60 s Bob's place and ticket have expired: he is queued anew, behind Carol.
    let e = p.join(0, "bob", Some(&bob), NOW + 60_000);
    assert_eq!(e.ticket_refused, Some(TicketError::Expired));
    assert_eq!(e.queue.dropped.expired, 1);
    assert_eq!(position(&e), 2);
    assert_eq!(position(&p.join(1, "carol", Some(&carol), NOW + 60_000)), 1);
}

#[test]
fn the_queue_is_bounded_by_max_queue_past_which_a_join_gets_hunt_full() {
    let mut p = Proxy::room(1, r#","max_queue":2"#);
    fill(&mut p, 1, NOW);
    queued(&p.join(0, "bob", None, NOW));
    queued(&p.join(1, "carol", None, NOW));
    let e = p.join(0, "dave", None, NOW);
    assert_eq!(e.event, Event::Rejected);
    let body: serde_json::Value = serde_json::from_str(&e.reply.unwrap().body).unwrap();
    assert_eq!(body["error"], "hunt_full");
    // A queued hunter's retry is not a new place: Bob still gets his position.
    assert_eq!(position(&p.join(1, "bob", None, NOW + 1)), 1);
}

#[test]
fn forged_other_hunt_and_other_hunter_queue_tickets_give_nothing() {
    let mut p = Proxy::room(1, "");
    fill(&mut p, 1, NOW);
    let bob = queued(&p.join(0, "bob", None, NOW)).0;
    queued(&p.join(1, "carol", None, NOW));
    // Dave presents Bob's ticket: it is Bob's, not his; Dave queues at the end.
    let e = p.join(0, "dave", Some(&bob), NOW + 1);
    assert_eq!(e.ticket_refused, Some(TicketError::OtherHunter));
    assert_eq!(position(&e), 3);
    // A ticket signed with another secret, or claiming place 1 with a bad MAC.
    let other = Config::from_json(
        r#"{"standalone":true,"ticket_secrets":["another-secret-0123"]}"#.as_bytes(),
    )
    .unwrap()
    .ticket_keys
    .issue_queue("h1", "erin", 1, NOW);
    let e = p.join(1, "erin", Some(&other), NOW + 2);
    assert_eq!(e.ticket_refused, Some(TicketError::BadSignature));
    assert_eq!(position(&e), 4);
    let tampered = bob.replacen(".1.", ".0.", 1);
    let e = p.join(0, "frank", Some(&tampered), NOW + 3);
    assert!(e.ticket_refused.is_some());
    assert_eq!(position(&e), 5);
    // A valid queue ticket of another hunt.
    let h2 = p.config.ticket_keys.issue_queue("h2", "gina", 1, NOW);
    let e = p.join(1, "gina", Some(&h2), NOW + 4);
    assert_eq!(e.ticket_refused, Some(TicketError::OtherHunt));
    assert_eq!(position(&e), 6);
    // A session ticket is not a queue ticket, nor a queue ticket a session ticket.
    let session = p.config.ticket_keys.issue_at("h1", "hal", u32::MAX, NOW);
    assert_eq!(
        p.join(0, "hal", Some(&session), NOW + 5).ticket_refused,
        Some(TicketError::Malformed)
    );
    let req = Req {
        hunter: Some("bob"),
        ticket: Some(&bob),
        ..Req::default()
    };
    let e = p.send(0, &req, NOW + 6);
    assert_eq!(e.ticket_refused, Some(TicketError::Malformed));
    assert_eq!(position(&e), 1, "bob keeps his own place");
}

#[test]
fn an_anonymous_hunter_keeps_its_place_and_identity_through_the_queue_cookie() {
    let mut p = Proxy::new(
        r#","hunter":{"anonymous":true},"max_hunters":1,"waiting_room":{"enabled":true}"#,
    );
    let first = p.send(0, &Req::default(), NOW);
    assert_eq!(first.event, Event::Admitted);
    let player = ticket_of(&first);
    let e = p.send(1, &Req::default(), NOW + 1);
    let (queue, body) = queued(&e);
    assert_eq!(body["position"], 1);
    // Without the cookie a browser is someone new: place 2.
    assert_eq!(position(&p.send(0, &Req::default(), NOW + 2)), 2);
    let req = Req {
        queue_cookie: Some(&queue),
        ..Req::default()
    };
    let e = p.send(0, &req, NOW + 3);
    assert_eq!(position(&e), 1, "{e:?}");
    // The player leaves; the queued browser comes back with its cookie and is in,
    // under the identity its place was given to.
    let leave = Req {
        ticket: Some(&player),
        leave: true,
        ..Req::default()
    };
    assert_eq!(p.send(1, &leave, NOW + 4).event, Event::Left);
    let e = p.send(1, &req, NOW + 5);
    assert_eq!(e.event, Event::Admitted, "{e:?}");
    let claims = p
        .config
        .ticket_keys
        .verify(&ticket_of(&e), "h1", NOW + 5, 300)
        .unwrap();
    let queued_as = p
        .config
        .ticket_keys
        .verify_queue(&queue, "h1", NOW + 5, 1800)
        .unwrap();
    assert_eq!(claims.hunter, queued_as.hunter);
    // Arrival order counts every join of the hunt: the first player took place 1.
    assert_eq!(queued_as.seq, 2);
}

#[test]
fn the_estimated_wait_is_position_times_the_measured_time_per_admission() {
    let mut p = Proxy::room(2, "");
    let players = fill(&mut p, 2, NOW);
    let tickets: Vec<String> = (0..4)
        .map(|i| queued(&p.join(i, &format!("q{i}"), None, NOW)).0)
        .collect();
    // 10 s later a seat frees and q0 takes it: 1 admission in 10 s.
    p.leave(0, "player-0", &players[0], NOW + 10_000);
    assert_eq!(
        p.join(0, "q0", Some(&tickets[0]), NOW + 10_000).event,
        Event::Admitted
    );
    let eta = |e: &Effects| queued(e).1["eta_s"].as_u64();
    assert_eq!(
        eta(&p.join(1, "q1", Some(&tickets[1]), NOW + 10_000)),
        Some(10)
    );
    assert_eq!(
        eta(&p.join(1, "q3", Some(&tickets[3]), NOW + 10_000)),
        Some(30)
    );
    // 2 s later another: 2 admissions in 12 s, 6 s each.
    p.leave(1, "player-1", &players[1], NOW + 12_000);
    assert_eq!(
        p.join(1, "q1", Some(&tickets[1]), NOW + 12_000).event,
        Event::Admitted
    );
    assert_eq!(
        eta(&p.join(0, "q2", Some(&tickets[2]), NOW + 12_000)),
        Some(6)
    );
    assert_eq!(
        eta(&p.join(0, "q3", Some(&tickets[3]), NOW + 12_000)),
        Some(12)
    );
}

#[test]
fn a_browser_gets_the_waiting_page_and_a_configured_template_replaces_it() {
    let mut p = Proxy::room(1, "");
    fill(&mut p, 1, NOW);
    let req = Req {
        hunter: Some("bob"),
        html: true,
        ..Req::default()
    };
    let e = p.send(0, &req, NOW);
    queued(&e);
    let reply = e.reply.unwrap();
    assert!(reply
        .headers
        .contains(&("content-type", "text/html; charset=utf-8".to_string())));
    assert!(reply.headers.contains(&("refresh", "5".to_string())));
    assert!(reply
        .body
        .contains(r#"<meta http-equiv="refresh" content="5">"#));
    assert!(
        reply.body.contains(r#"<p id="position">1</p>"#),
        "{}",
        reply.body
    );
    assert!(reply.body.contains("not known yet"));

    let mut p = Proxy::room(
        1,
        r#","page":"<p>{{hunt}}: {{position}} ({{eta_s}} s, again in {{retry_after_s}} s)</p>""#,
    );
    fill(&mut p, 1, NOW);
    let e = p.send(0, &req, NOW);
    assert_eq!(
        e.reply.unwrap().body,
        "<p>h1: 1 (unknown s, again in 5 s)</p>"
    );
}

#[test]
fn shadow_hunts_and_hunts_without_a_waiting_room_answer_as_before() {
    let mut p = Proxy::new(
        r#","max_hunters":1,"waiting_room":{"enabled":true},"hunts":{"h1":{"mode":"shadow"}}"#,
    );
    fill(&mut p, 1, NOW);
    assert_eq!(p.join(0, "bob", None, NOW).event, Event::ShadowRejected);
    let mut p = Proxy::new(r#","max_hunters":1"#);
    fill(&mut p, 1, NOW);
    assert_eq!(p.join(0, "bob", None, NOW).event, Event::Rejected);
}

#[cfg(not(target_arch = "wasm32"))]
mod interleavings {
    //! Random interleavings of joins, retries, leaves and silences over two
    //! workers: whoever is admitted, every earlier live place still has a free
    //! seat left for when it comes back, and a position is 1 + the live places ahead.
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Step {
        /// Hunter `i` tries (joins, or retries with its queue ticket).
        Try(usize, usize),
        /// Player `i` leaves.
        Leave(usize, usize),
        /// Time passes (ms).
        Wait(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0..12usize, 0..2usize).prop_map(|(h, w)| Step::Try(h, w)),
            2 => (0..12usize, 0..2usize).prop_map(|(h, w)| Step::Leave(h, w)),
            2 => (1..9_000u64).prop_map(Step::Wait),
        ]
    }

    /// What the model knows of hunter `i`.
    #[derive(Debug, Clone, Default)]
    struct Hunter {
        session: Option<String>,
        queue: Option<String>,
        /// (place taken at, last try) while told to wait.
        waiting: Option<(u64, u64)>,
        order: u64,
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn no_one_overtakes_a_live_place(steps in proptest::collection::vec(step(), 1..120)) {
            // limit 3, retry 5 s + grace 2 s, places live 30 s, at most 6.
            let mut p = Proxy::with_ttl(
                604_800,
                r#","max_hunters":3,"waiting_room":{"enabled":true,"grace_s":2,"queue_ttl_s":30,"max_queue":6}"#,
            );
            let (abandon_ms, ttl_ms) = (7_000u64, 30_000u64);
            let mut hunters = vec![Hunter::default(); 12];
            let mut now = NOW;
            let mut next_order = 0u64;
            let mut active = 0u32;
            for step in steps {
                // Every request at its own millisecond (a re-join in the very
                // millisecond of its leave is another matter: see session_end).
                now += 1;
                // Places the model says have dropped out.
                for h in hunters.iter_mut() {
                    if let Some((taken, seen)) = h.waiting {
                        if taken + ttl_ms <= now || seen + abandon_ms < now {
                            h.waiting = None;
                        }
                    }
                }
                match step {
                    Step::Wait(ms) => now += ms,
                    Step::Leave(i, w) => {
                        if let Some(ticket) = hunters[i].session.take() {
                            p.leave(w, &format!("h{i}"), &ticket, now);
                            active -= 1;
                        }
                    }
                    Step::Try(i, w) => {
                        if hunters[i].session.is_some() {
                            continue;
                        }
                        let queue = hunters[i].queue.clone();
                        let e = p.join(w, &format!("h{i}"), queue.as_deref(), now);
                        match e.event {
                            Event::Admitted => {
                                active += 1;
                                prop_assert!(active <= 3);
                                // Every earlier live place still has a seat left:
                                // nobody got one that an earlier hunter waits for.
                                let mine = hunters[i].waiting.map_or(u64::MAX, |_| hunters[i].order);
                                let earlier = hunters
                                    .iter()
                                    .filter(|h| h.waiting.is_some() && h.order < mine)
                                    .count() as u32;
                                prop_assert!(
                                    earlier <= 3 - active,
                                    "h{i} (order {mine}) took a seat from one of {earlier} earlier places"
                                );
                                hunters[i].session = Some(ticket_of(&e));
                                hunters[i].waiting = None;
                                hunters[i].queue = None;
                            }
                            Event::Queued => {
                                let (ticket, body) = queued(&e);
                                let h = &mut hunters[i];
                                match &mut h.waiting {
                                    Some((_, seen)) => *seen = now,
                                    None => {
                                        h.waiting = Some((now, now));
                                        h.order = next_order;
                                        next_order += 1;
                                    }
                                }
                                h.queue = Some(ticket);
                                let mine = h.order;
                                let ahead = hunters
                                    .iter()
                                    .filter(|h| h.waiting.is_some() && h.order < mine)
                                    .count() as u64;
                                prop_assert_eq!(body["position"].as_u64(), Some(ahead + 1));
                            }
                            Event::Rejected => {
                                let live = hunters.iter().filter(|h| h.waiting.is_some()).count();
                                prop_assert_eq!(live, 6, "hunt_full only with a full queue");
                            }
                            other => prop_assert!(false, "unexpected {other:?}"),
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn queued_replies_count_as_rejected_joins_in_the_lease_report() {
    // Across proxies the order is per proxy; the governor sees a proxy's queue
    // as demand: every queued reply counts as a rejected join.
    let mut p = Proxy::room(1, "");
    fill(&mut p, 1, NOW);
    for i in 0..3 {
        queued(&p.join(i, &format!("q{i}"), None, NOW));
    }
    queued(&p.join(0, "q0", None, NOW + 1));
    for w in 0..2 {
        p.workers[w].tick(&p.config, &p.shared, NOW + 2).unwrap();
    }
    let report = p.workers[0].lease_report(&p.shared, NOW + 2).unwrap();
    let h1 = report.iter().find(|line| line.hunt == "h1").unwrap();
    assert_eq!((h1.active, h1.rejected), (1, 4));
}
