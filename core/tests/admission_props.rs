//! Property tests of admission (issue 13): any interleaving of joins, re-joins, ticket
//! renewals, expiries, sweeps and limit changes over several workers sharing one store.
//! No join is admitted while the hunt holds its limit in live sessions; a hunter with a
//! live ticket is never refused; once every session has expired the hunt admits its
//! whole limit again.
#![cfg(not(target_arch = "wasm32"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;

use huntgate_core::config::Config;
use huntgate_core::engine::{Event, Worker};
use huntgate_core::shared_data::MemorySharedData;
use huntgate_core::ticket::session_expiry_s;
use proptest::prelude::*;

const NOW: u64 = 1_800_000_000_000;
const TTL_S: u64 = 10;
const HUNTERS: usize = 8;
const WORKERS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    /// Hunter joins on a worker without a ticket.
    Join(usize, usize),
    /// Hunter sends a request with its latest ticket (a renewal once past half-life).
    Play(usize, usize),
    /// Time passes.
    Advance(u64),
    /// A worker's tick (the sweeper lease holder sweeps).
    Tick(usize),
    /// The limit changes (a live reconfiguration).
    SetLimit(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..WORKERS, 0..HUNTERS).prop_map(|(w, h)| Op::Join(w, h)),
        4 => (0..WORKERS, 0..HUNTERS).prop_map(|(w, h)| Op::Play(w, h)),
        2 => (0u64..4_000).prop_map(Op::Advance),
        2 => (0..WORKERS).prop_map(Op::Tick),
        1 => (0u32..6).prop_map(Op::SetLimit),
    ]
}

fn config(limit: u32) -> Config {
    Config::from_json(
        format!(
            r#"{{"standalone":true,"ticket_secrets":["0123456789abcdef"],"session_ttl_s":{TTL_S},
                "max_hunters":{limit},"max_tracked_hunts":2}}"#
        )
        .as_bytes(),
    )
    .unwrap()
}

struct World {
    shared: MemorySharedData,
    workers: Vec<Worker>,
    config: Config,
    limit: u32,
    now: u64,
    /// Per hunter: its latest ticket and the expiry it carries (ms).
    sessions: BTreeMap<usize, (String, u64)>,
}

impl World {
    fn new() -> Self {
        let config = config(3);
        let shared = MemorySharedData::default();
        let mut workers: Vec<Worker> = (0..WORKERS).map(|i| Worker::new(i as u64 + 1)).collect();
        for w in &mut workers {
            w.configure(&config, &shared, NOW).unwrap();
        }
        Self {
            shared,
            workers,
            config,
            limit: 3,
            now: NOW,
            sessions: BTreeMap::new(),
        }
    }

    /// Hunters holding a ticket that has not expired: the store counts at least these.
    fn live(&self) -> usize {
        self.sessions
            .values()
            .filter(|(_, end)| self.now < *end)
            .count()
    }

    fn send(
        &mut self,
        w: usize,
        hunter: usize,
        ticket: Option<String>,
    ) -> Result<(), TestCaseError> {
        let mut headers = vec![
            (":path".to_string(), "/hunts/h1/play".to_string()),
            ("x-veltrix-hunter".to_string(), format!("hunter-{hunter}")),
        ];
        let presented = ticket.is_some();
        if let Some(t) = ticket {
            headers.push(("x-huntgate-ticket".to_string(), t));
        }
        let live = self.live();
        let holds = self
            .sessions
            .get(&hunter)
            .is_some_and(|(_, end)| self.now < *end);
        let e = self.workers[w].handle(
            &self.config,
            &self.shared,
            &headers,
            self.now,
            &mut String::new,
        );
        match e.event {
            Event::Admitted => {
                // A new seat only below the limit (a re-join of a live session is no new
                // seat: it holds one already).
                prop_assert!(
                    holds || live < self.limit as usize,
                    "admitted hunter {} with {} live sessions, limit {}",
                    hunter,
                    live,
                    self.limit
                );
            }
            Event::Rejected => {
                prop_assert!(
                    !(presented && holds),
                    "hunter {} with a live ticket refused",
                    hunter
                );
            }
            Event::Session | Event::Renewed => prop_assert!(presented),
            other => prop_assert!(false, "unexpected {:?}", other),
        }
        if let Some(issued) = e.issue {
            let expires_ms = u64::from(session_expiry_s(self.now, TTL_S as u32)) * 1_000;
            self.sessions.insert(hunter, (issued.ticket, expires_ms));
        }
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Join(w, h) => self.send(w, h, None)?,
            Op::Play(w, h) => {
                let ticket = self.sessions.get(&h).map(|(t, _)| t.clone());
                if ticket.is_some() {
                    self.send(w, h, ticket)?;
                }
            }
            Op::Advance(ms) => self.now += ms,
            Op::Tick(w) => {
                self.workers[w]
                    .tick(&self.config, &self.shared, self.now)
                    .unwrap();
            }
            Op::SetLimit(limit) => {
                self.limit = limit;
                self.config = config(limit);
                for w in &mut self.workers {
                    w.configure(&self.config, &self.shared, self.now).unwrap();
                }
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn admission_holds_the_limit_under_any_interleaving(ops in prop::collection::vec(op(), 1..120)) {
        let mut world = World::new();
        for op in &ops {
            world.apply(op)?;
        }
        // Every session expires and is swept: the hunt admits its whole limit again.
        world.now += (TTL_S + 5) * 1_000;
        for w in 0..WORKERS {
            world.workers[w].tick(&world.config, &world.shared, world.now).unwrap();
        }
        world.sessions.clear();
        let mut admitted = 0;
        for i in 0..10 {
            let headers = [
                (":path", "/hunts/h1/join".to_string()),
                ("x-veltrix-hunter", format!("fresh-{i}")),
            ];
            let e = world.workers[i % WORKERS].handle(&world.config, &world.shared, &headers, world.now, &mut String::new);
            if e.event == Event::Admitted {
                admitted += 1;
            }
        }
        prop_assert_eq!(admitted, world.limit as usize, "the count did not return to zero");
    }
}
