//! The waiting room in real Envoy (`--concurrency 2`, requests spread over both
//! workers): a full hunt queues its joiners, and as players leave the queued
//! hunters get in in arrival order, their positions and estimated waits going
//! down, while a late joiner retrying as fast as it can never overtakes. The
//! queue is bounded, places expire and drop out, and forged, other-hunt and
//! other-hunter queue tickets give nothing.

use std::time::Duration;

use huntgate_e2e::metrics::TICKET_INVALID;
use huntgate_e2e::plugin::{self, HUNTER_HEADER, TICKET_HEADER};
use huntgate_e2e::poll::poll_until;
use huntgate_e2e::{Connection, Envoy, Response, Upstream};
use serde_json::{json, Value};

use crate::{assert_admitted, join_path};

/// Connections held open; Envoy spreads them over its workers.
const CONNECTIONS: usize = 8;
/// How long Envoy may take to report connections, counters or gauges.
const BOUND: Duration = Duration::from_secs(30);
/// The session TTL: far longer than any test, so only a leave frees a seat.
const TTL_S: u64 = 300;
/// The queue ticket header, both ways.
const QUEUE_HEADER: &str = "x-huntgate-queue";
/// Waiting-room metrics as exported.
const QUEUED: &str = "huntgate_queued";
const DEQUEUED: &str = "huntgate_dequeued";
const ABANDONED: &str = "huntgate_queue_abandoned";
const QUEUE_EXPIRED: &str = "huntgate_queue_expired";
const QUEUE_LENGTH: &str = "huntgate_hunt_queue_length";
const QUEUE_OLDEST_WAIT_MS: &str = "huntgate_hunt_queue_oldest_wait_ms";

/// Connections on every worker of one Envoy.
struct Workers {
    connections: Vec<Connection>,
    next: usize,
}

impl Workers {
    fn open(envoy: &Envoy) -> Self {
        let connections = envoy.connections_on_every_worker(CONNECTIONS, BOUND);
        Self {
            connections,
            next: 0,
        }
    }

    /// The next connection, round robin (so consecutive requests alternate workers).
    fn next(&mut self) -> &mut Connection {
        self.next = (self.next + 1) % CONNECTIONS;
        &mut self.connections[self.next]
    }

    /// A join of `hunt` by `hunter`, presenting `queue` as its queue ticket.
    fn join(&mut self, hunt: &str, hunter: &str, queue: Option<&str>) -> Response {
        let mut headers = vec![(HUNTER_HEADER, hunter)];
        if let Some(queue) = queue {
            headers.push((QUEUE_HEADER, queue));
        }
        self.next().get(&join_path(hunt), &headers)
    }

    fn leave(&mut self, hunt: &str, hunter: &str, ticket: &str) {
        let response = self.next().request(
            "POST",
            &format!("/hunts/{hunt}/leave"),
            &[(HUNTER_HEADER, hunter), (TICKET_HEADER, ticket)],
        );
        assert_eq!(response.status, 200, "leave: {}", response.summary());
    }
}

/// A queued reply's queue ticket and JSON body, checked against the contract.
fn assert_queued(response: &Response, hunt: &str, retry_after_s: u64) -> (String, Value) {
    assert_eq!(
        response.status,
        429,
        "expected a queued 429: {}",
        response.summary()
    );
    assert!(!response.from_upstream(), "{}", response.summary());
    assert!(response.ticket().is_none(), "{}", response.summary());
    assert_eq!(
        response.header("retry-after"),
        Some(retry_after_s.to_string().as_str()),
        "{}",
        response.summary()
    );
    let ticket = response
        .header(QUEUE_HEADER)
        .unwrap_or_else(|| panic!("no {QUEUE_HEADER}: {}", response.summary()))
        .to_string();
    let cookie = format!("huntgate-queue.{hunt}={ticket}; Path=/; Max-Age=");
    assert!(
        response
            .header_all("set-cookie")
            .iter()
            .any(|c| c.starts_with(&cookie)),
        "expected set-cookie {cookie}…: {}",
        response.summary()
    );
    let body = response.json();
    assert_eq!(body["error"], "queued", "{}", response.summary());
    assert_eq!(body["hunt"], hunt, "{}", response.summary());
    assert_eq!(
        body["retry_after_s"],
        retry_after_s,
        "{}",
        response.summary()
    );
    (ticket, body)
}

fn position(body: &Value) -> u64 {
    body["position"].as_u64().expect("a position")
}

fn counter(envoy: &Envoy, name: &str) -> f64 {
    envoy.metrics().get(name, &[]).unwrap_or(0.0)
}

fn wait_for(envoy: &Envoy, name: &str, labels: &[(&str, &str)], value: f64) {
    poll_until(&format!("{name}{labels:?} = {value}"), BOUND, || {
        (envoy.metrics().get(name, labels) == Some(value)).then_some(())
    });
}

#[test]
fn forty_joiners_get_in_in_arrival_order_as_ten_players_leave_and_a_fast_late_joiner_never_overtakes(
) {
    const HUNT: &str = "queue-fifo";
    const RETRY_S: u64 = 2;
    let upstream = Upstream::start();
    let config = plugin::config(json!({
        "max_hunters": 10,
        "session_ttl_s": TTL_S,
        // A grace far longer than the test: only leaves move the queue.
        "waiting_room": {"enabled": true, "retry_after_s": RETRY_S, "grace_s": 600},
    }));
    let envoy = Envoy::start(&config, &upstream);
    let mut workers = Workers::open(&envoy);
    let hunter = |i: usize| format!("joiner-{i:02}");

    // 40 joiners in a known order: the first 10 play, the other 30 queue at 1..=30.
    let mut sessions = Vec::new();
    let mut places = Vec::new();
    for i in 0..40 {
        let response = workers.join(HUNT, &hunter(i), None);
        if i < 10 {
            sessions.push(assert_admitted(&response, HUNT, TTL_S));
        } else {
            let (ticket, body) = assert_queued(&response, HUNT, RETRY_S);
            assert_eq!(position(&body), i as u64 - 9, "{}", response.summary());
            assert!(
                body["eta_s"].is_null(),
                "no seat has freed yet, so no estimate: {body}"
            );
            places.push(ticket);
        }
    }
    // The late joiner arrives last, at place 31.
    let (late_ticket, body) = assert_queued(&workers.join(HUNT, "late", None), HUNT, RETRY_S);
    assert_eq!(position(&body), 31);
    wait_for(&envoy, QUEUE_LENGTH, &[("hunt", HUNT)], 31.0);
    wait_for(&envoy, QUEUED, &[], 31.0);
    let oldest = envoy
        .metrics()
        .get(QUEUE_OLDEST_WAIT_MS, &[("hunt", HUNT)])
        .expect("the oldest-wait gauge");
    assert!(oldest > 0.0, "oldest wait {oldest}");

    // Players leave one by one. After each leave the late joiner retries on
    // every worker first, then the queued hunters retry, the last first.
    let mut admitted = Vec::new();
    let mut seen: Vec<Vec<(u64, Option<u64>)>> = vec![Vec::new(); 30];
    let mut late_positions = Vec::new();
    for (round, session) in sessions.iter().enumerate() {
        workers.leave(HUNT, &hunter(round), session);
        for _ in 0..CONNECTIONS {
            let response = workers.join(HUNT, "late", Some(&late_ticket));
            let (_, body) = assert_queued(&response, HUNT, RETRY_S);
            late_positions.push(position(&body));
        }
        for q in (0..30).rev() {
            if admitted.contains(&q) {
                continue;
            }
            let response = workers.join(HUNT, &hunter(q + 10), Some(&places[q]));
            if response.status == 200 {
                assert_admitted(&response, HUNT, TTL_S);
                assert!(
                    response.header_all("set-cookie").contains(
                        &format!(
                            "huntgate-queue.{HUNT}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"
                        )
                        .as_str()
                    ),
                    "the queue cookie is cleared on admission: {}",
                    response.summary()
                );
                admitted.push(q);
            } else {
                let (ticket, body) = assert_queued(&response, HUNT, RETRY_S);
                assert_eq!(ticket, places[q], "the place keeps its ticket");
                seen[q].push((position(&body), body["eta_s"].as_u64()));
            }
        }
    }
    let order: Vec<usize> = admitted.iter().map(|q| q + 11).collect();
    assert_eq!(
        order,
        (11..=20).collect::<Vec<_>>(),
        "the 11th-20th joiners, in arrival order"
    );
    // The late joiner never moved ahead of anyone: 31 at first, one place per admission.
    let expected: Vec<u64> = (0..10)
        .flat_map(|round| std::iter::repeat_n(31 - round, CONNECTIONS))
        .collect();
    assert_eq!(late_positions, expected);
    // Positions strictly decrease; estimates, once there is one, never go up.
    for (q, replies) in seen.iter().enumerate() {
        let positions: Vec<u64> = replies.iter().map(|(p, _)| *p).collect();
        assert!(
            positions.windows(2).all(|w| w[1] < w[0]),
            "joiner {}: positions {positions:?}",
            q + 11
        );
        let etas: Vec<u64> = replies.iter().filter_map(|(_, eta)| *eta).collect();
        assert!(
            etas.windows(2).all(|w| w[1] <= w[0]),
            "joiner {}: estimated waits {etas:?} ({replies:?})",
            q + 11
        );
        if q >= 10 {
            assert_eq!(
                etas.len(),
                9,
                "joiner {}: an estimate from the first admission on: {replies:?}",
                q + 11
            );
        }
    }
    wait_for(&envoy, DEQUEUED, &[], 10.0);
    wait_for(&envoy, QUEUE_LENGTH, &[("hunt", HUNT)], 21.0);
}

#[test]
fn the_queue_is_bounded_places_drop_out_and_expire_and_foreign_queue_tickets_give_nothing() {
    const FULL: &str = "queue-bounded";
    const OTHER: &str = "queue-other";
    let upstream = Upstream::start();
    let config = plugin::config(json!({
        "max_hunters": 1,
        "session_ttl_s": TTL_S,
        "waiting_room": {"enabled": true, "retry_after_s": 1, "grace_s": 0, "max_queue": 3},
    }));
    let envoy = Envoy::start(&config, &upstream);
    let mut workers = Workers::open(&envoy);
    assert_admitted(&workers.join(FULL, "player", None), FULL, TTL_S);
    assert_admitted(&workers.join(OTHER, "player", None), OTHER, TTL_S);

    // Bob queues first; Carol presents Bob's ticket (not hers), a ticket of the
    // other hunt and a forged one: each counts as none, she queues behind Bob.
    let (bob, body) = assert_queued(&workers.join(FULL, "bob", None), FULL, 1);
    assert_eq!(position(&body), 1);
    let invalid = counter(&envoy, TICKET_INVALID);
    let (other_hunt, _) = assert_queued(&workers.join(OTHER, "carol", None), OTHER, 1);
    let forged = {
        let (body, _) = bob.rsplit_once('.').unwrap();
        format!("{body}.AAAAAAAAAAAAAAAAAAAAAA")
    };
    for (i, presented) in [&bob, &other_hunt, &forged].into_iter().enumerate() {
        let response = workers.join(FULL, "carol", Some(presented));
        let (ticket, body) = assert_queued(&response, FULL, 1);
        assert_eq!(
            position(&body),
            2,
            "presentation {i}: {}",
            response.summary()
        );
        assert_ne!(ticket, bob);
    }

    // The queue holds 3: Dave takes the last place, Erin gets today's hunt_full.
    let (dave, body) = assert_queued(&workers.join(FULL, "dave", None), FULL, 1);
    assert_eq!(position(&body), 3);
    let response = workers.join(FULL, "erin", None);
    assert_eq!(response.status, 429, "{}", response.summary());
    assert_eq!(
        response.json()["error"],
        "hunt_full",
        "{}",
        response.summary()
    );
    assert_eq!(response.header(QUEUE_HEADER), None);

    // Only Dave keeps retrying (at the poll's pace, well within Retry-After 1 s):
    // Bob and Carol drop out 1 s after their last try, and Dave moves up to 1.
    poll_until("bob and carol to drop out", BOUND, || {
        let (_, body) = assert_queued(&workers.join(FULL, "dave", Some(&dave)), FULL, 1);
        (position(&body) == 1).then_some(())
    });
    // Bob and Carol here, and Carol's place in the other hunt.
    wait_for(&envoy, ABANDONED, &[], 3.0);
    // Carol's three foreign tickets, counted as refused (checked last: counters
    // reach the stats on a worker's tick, and the places above must not wait for it).
    poll_until("the refused queue tickets to be counted", BOUND, || {
        (counter(&envoy, TICKET_INVALID) == invalid + 3.0).then_some(())
    });
}

#[test]
fn a_place_expires_after_queue_ttl_s_and_its_holder_queues_anew() {
    const HUNT: &str = "queue-expiry";
    let upstream = Upstream::start();
    let config = plugin::config(json!({
        "max_hunters": 1,
        "session_ttl_s": TTL_S,
        "waiting_room": {"enabled": true, "retry_after_s": 1, "queue_ttl_s": 2, "grace_s": 60},
    }));
    let envoy = Envoy::start(&config, &upstream);
    let mut workers = Workers::open(&envoy);
    assert_admitted(&workers.join(HUNT, "player", None), HUNT, TTL_S);
    let (bob, body) = assert_queued(&workers.join(HUNT, "bob", None), HUNT, 1);
    assert_eq!(position(&body), 1);
    // Bob retries until his 2-second place has expired: he gets a new place
    // (and a new queue ticket), his old ticket counted as refused.
    let invalid = counter(&envoy, TICKET_INVALID);
    let renewed = poll_until("bob's place to expire", BOUND, || {
        let (ticket, body) = assert_queued(&workers.join(HUNT, "bob", Some(&bob)), HUNT, 1);
        assert_eq!(position(&body), 1);
        (ticket != bob).then_some(ticket)
    });
    assert_ne!(renewed, bob);
    wait_for(&envoy, QUEUE_EXPIRED, &[], 1.0);
    poll_until(
        "the expired queue ticket to be counted as refused",
        BOUND,
        || (counter(&envoy, TICKET_INVALID) > invalid).then_some(()),
    );
}

/// Headless Chromium: `$HUNTGATE_CHROMIUM`, else `chromium` on PATH
/// (`scripts/install-browser-tools.sh` installs Debian's).
fn chromium() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("HUNTGATE_CHROMIUM") {
        return path.into();
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("chromium"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!("no chromium: set HUNTGATE_CHROMIUM or run scripts/install-browser-tools.sh")
        })
}

/// A headless Chromium loading `url` with the profile `profile` (cookies kept
/// between runs) for `budget_ms` of virtual time, then dumping the DOM.
/// Virtual time runs only while the page is idle (never during a request), so
/// the page's refreshes happen as fast as Envoy answers them. (Chromium 156
/// does not exit when the budget runs out while a page keeps refreshing:
/// either end before the first refresh or on a page that stays.)
struct Browser {
    child: std::process::Child,
}

impl Browser {
    fn open(profile: &std::path::Path, url: &str, budget_ms: u64) -> Self {
        let child = std::process::Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("--dump-dom")
            .arg(format!("--virtual-time-budget={budget_ms}"))
            .arg(url)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start chromium: {e}"));
        Self { child }
    }

    /// Whether it has exited.
    fn done(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }

    /// The DOM it dumped, once it exited by itself.
    fn dom(mut self) -> String {
        poll_until("chromium to dump the page", BOUND * 4, || {
            self.done().then_some(())
        });
        let mut dom = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            std::io::Read::read_to_string(&mut stdout, &mut dom).expect("chromium's output");
        }
        dom
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.done() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn the_waiting_page_shows_the_position_refreshes_and_lands_in_the_hunt_in_chromium() {
    const HUNT: &str = "waiting-page";
    const WAITING: &str = "huntgate_queue_waiting";
    let upstream = Upstream::start();
    let config = plugin::config(json!({
        "hunter": {"anonymous": true},
        "max_hunters": 1,
        "session_ttl_s": TTL_S,
        "waiting_room": {"enabled": true, "retry_after_s": 1},
    }));
    let envoy = Envoy::start(&config, &upstream);
    let mut connection = Connection::open(envoy.addr());
    // An app (no text/html) takes the only seat.
    let response = connection.get(&join_path(HUNT), &[]);
    let player = assert_admitted(&response, HUNT, TTL_S);
    let profile = tempfile::tempdir().expect("a browser profile");
    let url = format!("http://{}{}", envoy.addr(), join_path(HUNT));

    // Loaded (half a second, before the first refresh): the page shows place 1.
    let dom = Browser::open(profile.path(), &url, 500).dom();
    assert!(dom.contains("The hunt waiting-page is full"), "{dom}");
    assert!(dom.contains(r#"<p id="position">1</p>"#), "{dom}");
    assert!(dom.contains("Estimated wait: not known yet"), "{dom}");
    assert!(
        dom.contains(r#"<meta http-equiv="refresh" content="1">"#),
        "{dom}"
    );
    wait_for(&envoy, QUEUED, &[], 1.0);

    // Left open, it refreshes itself every (virtual) second, keeping its place
    // by its cookie; once the player leaves, the next refresh is admitted and
    // the browser lands on the hunt (the upstream's page, which does not
    // refresh, so the virtual time budget then runs out at once).
    let refreshing = counter(&envoy, WAITING);
    let mut browser = Browser::open(profile.path(), &url, 3_600_000);
    poll_until("the browser to refresh", BOUND, || {
        assert!(!browser.done(), "chromium stopped before it was admitted");
        (counter(&envoy, WAITING) >= refreshing + 3.0).then_some(())
    });
    assert_eq!(
        counter(&envoy, QUEUED),
        1.0,
        "one place, kept across refreshes"
    );
    let response = connection.request(
        "POST",
        &format!("/hunts/{HUNT}/leave"),
        &[(TICKET_HEADER, &player)],
    );
    assert_eq!(response.status, 200, "leave: {}", response.summary());
    let dom = browser.dom();
    assert!(
        dom.contains(r#""upstream":"echo""#),
        "not in the hunt: {dom}"
    );
    assert!(
        dom.contains(r#""x-huntgate-decision":["admitted"]"#),
        "{dom}"
    );
    wait_for(&envoy, DEQUEUED, &[], 1.0);
}

#[test]
fn across_two_proxies_the_order_is_per_proxy_and_a_place_does_not_travel() {
    const HUNT: &str = "queue-proxies";
    let upstream = Upstream::start();
    let config = plugin::config(json!({
        "max_hunters": 1,
        "session_ttl_s": TTL_S,
        "waiting_room": {"enabled": true, "retry_after_s": 1, "grace_s": 600},
    }));
    let first = Envoy::start(&config, &upstream);
    let second = Envoy::start(&config, &upstream);
    let mut a = Workers::open(&first);
    let mut b = Workers::open(&second);
    let player = assert_admitted(&a.join(HUNT, "player-a", None), HUNT, TTL_S);
    assert_admitted(&b.join(HUNT, "player-b", None), HUNT, TTL_S);
    let (bob, body) = assert_queued(&a.join(HUNT, "bob", None), HUNT, 1);
    assert_eq!(position(&body), 1);
    let (_, body) = assert_queued(&b.join(HUNT, "carol", None), HUNT, 1);
    assert_eq!(position(&body), 1, "each proxy has its own queue");
    // Bob's ticket verifies on the second proxy, but his place is on the first:
    // there he is a newcomer, behind Carol.
    let (_, body) = assert_queued(&b.join(HUNT, "bob", Some(&bob)), HUNT, 1);
    assert_eq!(position(&body), 2);
    // On the first proxy his place holds: the seat that frees there is his.
    a.leave(HUNT, "player-a", &player);
    let (_, body) = assert_queued(&a.join(HUNT, "dave", None), HUNT, 1);
    assert_eq!(position(&body), 2);
    assert_admitted(&a.join(HUNT, "bob", Some(&bob)), HUNT, TTL_S);
}
