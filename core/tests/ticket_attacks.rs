//! The shared table of ticket attacks (`cases/tickets.tsv`, also sent through a real
//! Envoy by the e2e suite) against the engine over one shared store and two workers: no
//! attack gets a hunter in, none moves the count.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use huntgate_core::config::Config;
use huntgate_core::engine::{Effects, Event, Worker};
use huntgate_core::shared_data::MemorySharedData;

const CASES: &str = include_str!("cases/tickets.tsv");
const NOW: u64 = 1_800_000_000_000;
const HUNTER: &str = "x-veltrix-hunter";
const TICKET: &str = "x-huntgate-ticket";

struct Proxy {
    config: Config,
    shared: MemorySharedData,
    workers: [Worker; 2],
}

impl Proxy {
    fn new(secret: &str) -> Self {
        let config = Config::from_json(
            format!(
                r#"{{"standalone":true,"hunter":{{"header":"{HUNTER}"}},"ticket_secrets":["{secret}"],"session_ttl_s":300,"max_hunters":1,"hunts":{{"other":{{"max_hunters":5}}}}}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        let shared = MemorySharedData::default();
        let mut workers = [Worker::new(1), Worker::new(2)];
        for w in &mut workers {
            w.configure(&config, &shared, NOW).unwrap();
        }
        Self {
            config,
            shared,
            workers,
        }
    }

    fn send(&mut self, worker: usize, hunt: &str, headers: &[(String, String)]) -> Effects {
        let mut all = vec![(":path".to_owned(), format!("/hunts/{hunt}/join"))];
        all.extend_from_slice(headers);
        let mut mint = || "anonymous".to_owned();
        self.workers[worker % 2].handle(&self.config, &self.shared, &all, NOW + 1_000, &mut mint)
    }

    fn admit(&mut self, hunt: &str, hunter: &str) -> String {
        let e = self.send(0, hunt, &[(HUNTER.to_owned(), hunter.to_owned())]);
        assert_eq!(e.event, Event::Admitted, "{hunter} into {hunt}");
        e.issue.unwrap().ticket
    }
}

// The table's ticket changes and ways of presenting, one copy for both suites.
include!("cases/ticket_attacks.rs");

#[test]
fn no_ticket_attack_of_the_shared_table_gets_in_or_moves_the_count() {
    let mut proxy = Proxy::new("e2e-ticket-secret-0123456789abcdef");
    let alice = proxy.admit("vault", "alice");
    let carol_other = proxy.admit("other", "carol");
    let rotated_out = Proxy::new("a-rotated-out-secret-0123456789").admit("vault", "alice");
    let attacks = attacks(CASES, &alice, &carol_other, &rotated_out);
    for Attack {
        case,
        headers,
        expect,
    } in &attacks
    {
        for worker in 0..2 {
            let e = proxy.send(worker, "vault", headers);
            match *expect {
                "full" => {
                    assert_eq!(e.event, Event::Rejected, "{case} on worker {worker}");
                    let body = e.reply.unwrap().body;
                    assert!(
                        body.contains(r#""error":"hunt_full""#) && body.contains(r#""active":1"#),
                        "{case}: {body}"
                    );
                    assert!(e.issue.is_none(), "{case}: a ticket was issued");
                }
                "session" => assert_eq!(e.event, Event::Session, "{case} on worker {worker}"),
                other => panic!("unknown expect `{other}`"),
            }
        }
    }
    assert!(attacks.len() >= 20, "only {} cases", attacks.len());
    let e = proxy.send(1, "vault", &[(HUNTER.to_owned(), "after".to_owned())]);
    assert_eq!(e.event, Event::Rejected);
    assert!(e.reply.unwrap().body.contains(r#""active":1"#));
}
