//! Hostile requests the shared tables cannot hold (issue 13 §3): header bytes that are
//! not UTF-8, overlong paths and headers, a request target that is a query only. Each
//! is sent over HTTP/1.1 and HTTP/2 at a full hunt whose one seat alice holds; each must
//! end in the status pinned here, never reach the hunt unadmitted, and move no count.

use huntgate_e2e::plugin::{self, HUNTER_HEADER, TICKET_HEADER};
use huntgate_e2e::{h2_get_bytes, raw_request, Envoy, Response, Upstream};
use serde_json::json;

use crate::{assert_admitted, assert_hunt_full, assert_passed, join, with_ticket};

const HUNT: &str = "vault";

/// One hostile request: its target and headers (values as bytes), and the statuses it
/// may end in over each protocol. `None` over HTTP/2: Envoy may reset the stream
/// instead of answering, which also keeps it from the hunt.
struct Hostile {
    case: &'static str,
    target: String,
    headers: Vec<(&'static str, Vec<u8>)>,
    http1: u16,
    http2: Option<u16>,
}

fn hostile_requests(alice_ticket: &str) -> Vec<Hostile> {
    let join = format!("/hunts/{HUNT}/join");
    let hunter = |value: &[u8]| vec![(HUNTER_HEADER, value.to_vec())];
    let mut with_bad_ticket = hunter(b"bob");
    with_bad_ticket.push((
        TICKET_HEADER,
        [alice_ticket.as_bytes(), b"\xff\xfe"].concat(),
    ));
    let mut bad_cookie = hunter(b"bob");
    bad_cookie.push((
        "cookie",
        [format!("huntgate.{HUNT}=").as_bytes(), b"\xc3\x28\xff"].concat(),
    ));
    vec![
        // A hunter id that is not UTF-8 is refused: 400 bad_request invalid_hunter_id.
        Hostile {
            case: "non_utf8_hunter",
            target: join.clone(),
            headers: hunter(b"m\xffallory"),
            http1: 400,
            http2: Some(400),
        },
        // A ticket with bytes that are not UTF-8 is no ticket: bob is a new join, the hunt is full.
        Hostile {
            case: "non_utf8_ticket",
            target: join.clone(),
            headers: with_bad_ticket,
            http1: 429,
            http2: Some(429),
        },
        Hostile {
            case: "non_utf8_cookie",
            target: join.clone(),
            headers: bad_cookie,
            http1: 429,
            http2: Some(429),
        },
        // Longer than MAX_HUNTER_ID_LEN (256): 400 invalid_hunter_id as well.
        Hostile {
            case: "overlong_hunter",
            target: join.clone(),
            headers: hunter(&[b'h'; 4000]),
            http1: 400,
            http2: Some(400),
        },
        // Longer than MAX_HUNT_ID_LEN (64): not a hunt id.
        Hostile {
            case: "overlong_hunt_id",
            target: format!("/hunts/{}/join", "h".repeat(300)),
            headers: hunter(b"bob"),
            http1: 400,
            http2: Some(400),
        },
        // Past Envoy's request-header limit (60 KiB by default): Envoy answers itself.
        Hostile {
            case: "overlong_path",
            target: format!("/hunts/{HUNT}/join/{}", "a".repeat(70_000)),
            headers: hunter(b"bob"),
            http1: 431,
            http2: None,
        },
        Hostile {
            case: "overlong_header",
            target: join.clone(),
            headers: vec![
                (HUNTER_HEADER, b"bob".to_vec()),
                ("x-padding", vec![b'p'; 70_000]),
            ],
            http1: 431,
            http2: None,
        },
        // A request target that is a query only is not a path: Envoy refuses it.
        Hostile {
            case: "query_only_target",
            target: format!("?/hunts/{HUNT}/join"),
            headers: hunter(b"bob"),
            http1: 400,
            http2: None,
        },
    ]
}

fn http1(envoy: &Envoy, hostile: &Hostile) -> Option<Response> {
    let mut request = format!(
        "GET {} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n",
        hostile.target,
        envoy.addr()
    )
    .into_bytes();
    for (name, value) in &hostile.headers {
        request.extend_from_slice(name.as_bytes());
        request.extend_from_slice(b": ");
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    raw_request(envoy.addr(), &request).ok()
}

fn http2(envoy: &Envoy, hostile: &Hostile) -> Option<Response> {
    let headers: Vec<(&str, &[u8])> = hostile
        .headers
        .iter()
        .map(|(name, value)| (*name, value.as_slice()))
        .collect();
    h2_get_bytes(envoy.addr(), &hostile.target, &headers)
}

#[test]
fn hostile_bytes_lengths_and_targets_end_in_a_pinned_status_and_move_no_count() {
    let upstream = Upstream::start();
    let envoy = Envoy::start(
        &plugin::config(json!({"hunts": {HUNT: {"max_hunters": 1}}})),
        &upstream,
    );
    let client = envoy.client();
    let alice = assert_admitted(&join(&client, HUNT, "alice"), HUNT, 300);
    let mut problems = Vec::new();
    for hostile in hostile_requests(&alice) {
        let answers = [
            ("HTTP/1.1", http1(&envoy, &hostile), Some(hostile.http1)),
            ("HTTP/2", http2(&envoy, &hostile), hostile.http2),
        ];
        for (protocol, response, expected) in answers {
            let status = response.as_ref().map(|r| r.status);
            eprintln!("{} over {protocol}: {status:?}", hostile.case);
            if response.as_ref().is_some_and(Response::from_upstream) {
                problems.push(format!("{} over {protocol} reached the hunt", hostile.case));
            }
            // Where Envoy may reset instead (expected None), any non-2xx answer is defined.
            let defined = match expected {
                Some(expected) => status == Some(expected),
                None => status.is_none_or(|s| s >= 400),
            };
            if !defined {
                problems.push(format!(
                    "{} over {protocol}: status {status:?}, expected {expected:?}",
                    hostile.case
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // No count moved: still alice alone, and her session still passes.
    assert_hunt_full(&join(&client, HUNT, "bob"), HUNT, 1, 1);
    assert_passed(&with_ticket(&client, HUNT, "alice", &alice), "session");
}
