// One Envoy process as the engine tests see it: a configuration, the shared store and
// two workers over it (what Envoy runs with `--concurrency 2`), anonymous hunter ids
// minted in order. Included with `#[path]` by the engine, session-end and waiting-room
// tests; each adds the requests it sends in its own `impl Proxy`.
#![allow(dead_code)]

use huntgate_core::config::Config;
use huntgate_core::engine::{Effects, Worker};
use huntgate_core::shared_data::MemorySharedData;

/// The tests' clock origin (ms since the epoch).
pub const NOW: u64 = 1_800_000_000_000;
/// The ticket secret of every test configuration.
pub const SECRET: &str = "0123456789abcdef";

pub struct Proxy {
    pub config: Config,
    pub shared: MemorySharedData,
    pub workers: Vec<Worker>,
    minted: u32,
}

impl Proxy {
    /// A standalone proxy with `session_ttl_s` = `ttl_s` and the JSON members `extra`
    /// (each starting with a comma) added to its configuration.
    pub fn with_ttl(ttl_s: u32, extra: &str) -> Self {
        let config = config(ttl_s, extra);
        let shared = MemorySharedData::default();
        let mut workers = vec![Worker::new(1), Worker::new(2)];
        for w in &mut workers {
            w.configure(&config, &shared, NOW).unwrap();
        }
        Self {
            config,
            shared,
            workers,
            minted: 0,
        }
    }

    /// Applies a new configuration to both workers; the shared store stays.
    pub fn reconfigure_with_ttl(&mut self, ttl_s: u32, extra: &str) {
        self.config = config(ttl_s, extra);
        for w in &mut self.workers {
            w.configure(&self.config, &self.shared, NOW).unwrap();
        }
    }

    /// Worker `w % 2` handles a request with `headers` at `now`.
    pub fn handle(&mut self, w: usize, headers: &[(String, String)], now: u64) -> Effects {
        let minted = &mut self.minted;
        let mut mint = || {
            *minted += 1;
            format!("anon-{minted}")
        };
        self.workers[w % 2].handle(&self.config, &self.shared, headers, now, &mut mint)
    }
}

fn config(ttl_s: u32, extra: &str) -> Config {
    Config::from_json(
        format!(
            r#"{{"standalone":true,"ticket_secrets":["{SECRET}"],"session_ttl_s":{ttl_s}{extra}}}"#
        )
        .as_bytes(),
    )
    .unwrap()
}

/// The request headers: `:method`, `:path`, then the hunter and ticket headers if given.
pub fn headers(
    method: &str,
    path: &str,
    hunter: Option<&str>,
    ticket: Option<&str>,
) -> Vec<(String, String)> {
    let mut headers = vec![
        (":method".to_string(), method.to_string()),
        (":path".to_string(), path.to_string()),
    ];
    if let Some(h) = hunter {
        headers.push(("x-veltrix-hunter".to_string(), h.to_string()));
    }
    if let Some(t) = ticket {
        headers.push(("x-huntgate-ticket".to_string(), t.to_string()));
    }
    headers
}

/// The ticket issued with `e`.
pub fn ticket_of(e: &Effects) -> String {
    e.issue.as_ref().expect("a ticket").ticket.clone()
}
