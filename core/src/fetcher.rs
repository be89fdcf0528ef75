//! The governor feed: one elected worker per Envoy process fetches the throttle
//! document (plain or long polling) and publishes it into shared data, from
//! which every worker applies it.
//!
//! This is the state machine only; the adapter dispatches the HTTP calls.

use crate::config::GovernorFeed;
use crate::lease::FleetEnds;
use crate::shared_data::SharedData;
use crate::throttle::{self, ThrottleTable};

/// A fetch falls due this much early, so a timer tick that lands a hair
/// before the due time (host clocks differ) does not skip a whole period.
const SCHEDULE_SLACK_MS: u64 = 25;

/// A long poll the governor held at least this long is re-issued at once.
const LONG_POLL_HELD_MS: u64 = 1_000;

/// A long poll answered sooner (a server that does not hold it) is re-issued
/// no sooner than this after the previous one started: no busy loop.
const LONG_POLL_MIN_GAP_MS: u64 = 1_000;

/// Extra time past its timeout after which an unanswered fetch is forgotten.
const LOST_CALL_GRACE_MS: u64 = 5_000;

/// An HTTP call to dispatch to the governor cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// Request headers, pseudo-headers included.
    pub headers: Vec<(String, String)>,
    /// Request body (the lease report), if any.
    pub body: Option<Vec<u8>>,
    /// Call timeout in ms.
    pub timeout_ms: u32,
}

/// What a response did.
#[derive(Debug, Clone, PartialEq)]
pub enum FetchResult {
    /// A new document was validated and published (its version).
    Published(u64),
    /// The governor confirmed the document in force (304).
    NotModified,
    /// The fetch failed; the last good document stays.
    Failed(String),
}

/// Fetch scheduling state of the elected worker.
#[derive(Debug, Default)]
pub struct Fetcher {
    in_flight_since: Option<u64>,
    in_flight_timeout_ms: u64,
    in_flight_long_poll: bool,
    /// The host's token of the call in flight, once dispatched.
    in_flight_token: Option<u32>,
    next_due_ms: u64,
    etag: Option<String>,
    /// The `ends` member of the last lease answer published, until taken.
    fleet_ends: Option<FleetEnds>,
    /// Failures since the last success.
    pub consecutive_failures: u32,
}

impl Fetcher {
    /// The call to dispatch now, if one is due and none is in flight. With
    /// leases, it is the lease exchange (a POST of `report()`, plain polling).
    pub fn poll(
        &mut self,
        feed: &GovernorFeed,
        now_ms: u64,
        report: &mut dyn FnMut() -> Vec<u8>,
    ) -> Option<FetchRequest> {
        if let Some(since) = self.in_flight_since {
            if now_ms < since + self.in_flight_timeout_ms + LOST_CALL_GRACE_MS {
                return None;
            }
            self.in_flight_since = None;
        }
        if now_ms.saturating_add(SCHEDULE_SLACK_MS) < self.next_due_ms {
            return None;
        }
        let long_poll = feed.leases.is_none() && feed.long_poll_s > 0 && self.etag.is_some();
        if let Some(leases) = &feed.leases {
            self.in_flight_since = Some(now_ms);
            self.in_flight_token = None;
            self.in_flight_timeout_ms = u64::from(feed.timeout_ms);
            self.in_flight_long_poll = false;
            return Some(FetchRequest {
                headers: vec![
                    (":method".to_string(), "POST".to_string()),
                    (":path".to_string(), leases.path.clone()),
                    (":authority".to_string(), feed.authority.clone()),
                    ("accept".to_string(), "application/json".to_string()),
                    ("content-type".to_string(), "application/json".to_string()),
                ],
                body: Some(report()),
                timeout_ms: feed.timeout_ms,
            });
        }
        let path = if long_poll {
            format!("{}?wait_s={}", feed.path, feed.long_poll_s)
        } else {
            feed.path.clone()
        };
        let mut headers = vec![
            (":method".to_string(), "GET".to_string()),
            (":path".to_string(), path),
            (":authority".to_string(), feed.authority.clone()),
            ("accept".to_string(), "application/json".to_string()),
        ];
        if let Some(etag) = &self.etag {
            headers.push(("if-none-match".to_string(), etag.clone()));
        }
        let timeout_ms = if long_poll {
            feed.timeout_ms
                .saturating_add(feed.long_poll_s.saturating_mul(1000))
        } else {
            feed.timeout_ms
        };
        self.in_flight_since = Some(now_ms);
        self.in_flight_token = None;
        self.in_flight_timeout_ms = u64::from(timeout_ms);
        self.in_flight_long_poll = long_poll;
        Some(FetchRequest {
            headers,
            body: None,
            timeout_ms,
        })
    }

    /// The host dispatched the call [`Fetcher::poll`] returned under `token`.
    pub fn dispatched(&mut self, token: u32) {
        self.in_flight_token = Some(token);
    }

    /// Whether the response to the call `token` is the one awaited: `false` for
    /// the late answer to a call given up as lost (its report and its send time
    /// are not those of the call in flight, so its leases and its ends must not
    /// be taken for the newer call's).
    pub fn is_awaited(&self, token: u32) -> bool {
        self.in_flight_since.is_some() && self.in_flight_token.is_none_or(|t| t == token)
    }

    /// The host refused to dispatch the call (e.g. the cluster does not exist).
    pub fn dispatch_failed(&mut self, feed: &GovernorFeed, now_ms: u64) {
        self.in_flight_since = None;
        self.fail(feed, now_ms);
    }

    fn fail(&mut self, feed: &GovernorFeed, now_ms: u64) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.next_due_ms = now_ms + u64::from(feed.poll_interval_ms);
        self.etag = None;
    }

    /// Plain polls and lease exchanges (which never long-poll, whatever
    /// `long_poll_s` says) start one poll interval apart (counted from the
    /// start of the previous fetch, so the response time does not stretch the
    /// period past a timer tick). With long polling the next long poll is due
    /// at once after a plain fetch, a held long poll or a long poll that brought
    /// a new document (`changed`: a change came quickly after another), else
    /// after [`LONG_POLL_MIN_GAP_MS`] (a governor that answers at once without a
    /// change is not polled in a loop).
    fn succeed(&mut self, feed: &GovernorFeed, sent_ms: u64, now_ms: u64, changed: bool) {
        self.consecutive_failures = 0;
        self.next_due_ms = if feed.long_poll_s == 0 || feed.leases.is_some() {
            sent_ms + u64::from(feed.poll_interval_ms)
        } else if !self.in_flight_long_poll || changed || now_ms >= sent_ms + LONG_POLL_HELD_MS {
            now_ms
        } else {
            sent_ms + LONG_POLL_MIN_GAP_MS
        };
    }

    /// Handles the governor's answer (`status` is `None` when the call got none).
    #[inline(never)]
    pub fn on_response<S: SharedData>(
        &mut self,
        feed: &GovernorFeed,
        shared: &S,
        now_ms: u64,
        status: Option<u32>,
        etag: Option<&str>,
        body: &[u8],
    ) -> FetchResult {
        let sent_ms = self.in_flight_since.take().unwrap_or(now_ms);
        self.in_flight_token = None;
        let held_etag = self.etag.clone();
        self.fleet_ends = None;
        // A lease answer's `ends` are only the fetcher's: every worker's decoding of
        // the published document skips them.
        let ends = match (status, &feed.leases) {
            (Some(200), Some(_)) => FleetEnds::decode_answer(body),
            _ => Ok(None),
        };
        let result = match (status, ends) {
            (Some(200), Err(e)) => FetchResult::Failed(format!("document refused: {e}")),
            (Some(200), Ok(ends)) => match ThrottleTable::decode(body) {
                Ok(table) => match throttle::publish_exchange(shared, body, now_ms, sent_ms) {
                    Ok(()) => {
                        self.etag = etag.map(str::to_string);
                        self.fleet_ends = ends;
                        FetchResult::Published(table.version)
                    }
                    Err(e) => FetchResult::Failed(format!("cannot publish: {e}")),
                },
                Err(e) => FetchResult::Failed(format!("document refused: {e}")),
            },
            // A 304 confirms the document in force only for its own ETag.
            (Some(304), _)
                if self.etag.is_some() && etag.is_none_or(|e| Some(e) == self.etag.as_deref()) =>
            {
                match throttle::confirm(shared, now_ms) {
                    Ok(()) => FetchResult::NotModified,
                    Err(e) => FetchResult::Failed(format!("cannot confirm: {e}")),
                }
            }
            (Some(304), _) => {
                FetchResult::Failed("governor answered 304 for another document".into())
            }
            (Some(status), _) => FetchResult::Failed(format!("governor answered {status}")),
            (None, _) => FetchResult::Failed("no response".to_string()),
        };
        match result {
            FetchResult::Failed(_) => self.fail(feed, now_ms),
            FetchResult::Published(_) => {
                let changed = held_etag.is_some() && self.etag != held_etag;
                self.succeed(feed, sent_ms, now_ms, changed);
            }
            _ => self.succeed(feed, sent_ms, now_ms, false),
        }
        result
    }

    /// The `ends` member of the lease answer just published (`None` after any
    /// other response): the adapter hands it to the worker.
    pub fn take_fleet_ends(&mut self) -> Option<FleetEnds> {
        self.fleet_ends.take()
    }
}
