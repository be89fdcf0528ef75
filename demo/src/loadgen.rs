//! The load generator: one task per simulated hunter of the [`Spike`] schedule. A hunter
//! joins (honouring 429/503 + Retry-After until admitted or out of time), then moves every
//! few seconds and reads the leaderboard every few moves, sending back its huntgate ticket.
//! Every answer is classified into the run's [`Tally`]; a 429 to an admitted hunter is a
//! freeze.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::Method;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::http::{Answer, Http};
use crate::ramp::{splitmix, Arrival, Spike};
use crate::service::HUNTER_HEADER;
use crate::stats::{Histogram, Kind, Outcome, Tally};

/// How hunters behave.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Base URL of the public listener, e.g. `http://127.0.0.1:10000`.
    pub base: String,
    /// The hunt.
    pub hunt: String,
    /// Mean time between two requests of a playing hunter (±20 % jitter).
    pub move_interval: Duration,
    /// Every n-th request of a playing hunter reads the leaderboard instead of moving.
    pub leaderboard_every: u32,
    /// Wait after a failure without Retry-After.
    pub failure_backoff: Duration,
}

#[derive(Default)]
struct Counts {
    window: Tally,
    total: Tally,
    leaderboard: Histogram,
    hunters_admitted: u64,
    hunters_frozen: u64,
}

/// What the hunters did; shared between the hunters and the sampler.
#[derive(Default)]
pub struct Recorder {
    counts: Mutex<Counts>,
    playing: AtomicU64,
    arrived: AtomicU64,
}

/// Totals at the end of a run.
#[derive(Debug, Clone)]
pub struct Totals {
    /// Request counters.
    pub tally: Tally,
    /// Leaderboard latencies of successful reads.
    pub leaderboard: Histogram,
    /// Hunters admitted at least once.
    pub hunters_admitted: u64,
    /// Admitted hunters frozen at least once.
    pub hunters_frozen: u64,
    /// Hunters that arrived.
    pub hunters_arrived: u64,
}

impl Recorder {
    fn with<T>(&self, f: impl FnOnce(&mut Counts) -> T) -> T {
        let mut guard = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    fn record(&self, kind: Kind, outcome: Outcome) {
        self.with(|c| {
            c.window.record(kind, outcome);
            c.total.record(kind, outcome);
        });
    }

    /// Requests counted since the previous call.
    pub fn take_window(&self) -> Tally {
        self.with(|c| std::mem::take(&mut c.window))
    }

    /// Hunters playing now (admitted, not gone).
    pub fn playing(&self) -> u64 {
        self.playing.load(Ordering::Relaxed)
    }

    /// The totals so far.
    pub fn totals(&self) -> Totals {
        self.with(|c| Totals {
            tally: c.total,
            leaderboard: c.leaderboard.clone(),
            hunters_admitted: c.hunters_admitted,
            hunters_frozen: c.hunters_frozen,
            hunters_arrived: self.arrived.load(Ordering::Relaxed),
        })
    }
}

/// Starts every hunter of `spike` (relative to `t0`) and returns their tasks; abort the set
/// to stop them. Hunters leave by themselves at the end of their play time.
pub fn start(
    spike: &Spike,
    behaviour: Arc<Behaviour>,
    http: Http,
    recorder: Arc<Recorder>,
    t0: Instant,
) -> JoinSet<()> {
    let mut set = JoinSet::new();
    for arrival in spike.arrivals() {
        let (b, h, r) = (behaviour.clone(), http.clone(), recorder.clone());
        set.spawn(async move { hunter(arrival, &b, &h, &r, t0).await });
    }
    set
}

/// ±20 % around `base`, deterministic per (hunter, step).
fn jitter(base: Duration, hunter: u32, step: u64) -> Duration {
    let r = splitmix(u64::from(hunter) << 32 ^ step) % 401;
    base.mul_f64(0.8 + r as f64 / 1000.0)
}

async fn hunter(arrival: Arrival, b: &Behaviour, http: &Http, rec: &Recorder, t0: Instant) {
    tokio::time::sleep_until(t0 + arrival.at).await;
    rec.arrived.fetch_add(1, Ordering::Relaxed);
    let end = t0 + arrival.at + arrival.play;
    let id = format!("hunter-{:05}", arrival.index);
    let mut ticket: Option<String> = None;
    let mut admitted = false;
    let mut ever_admitted = false;
    let mut ever_frozen = false;
    let mut step: u64 = 0;
    // A short random offset so that hunters of one instant do not move in lockstep.
    tokio::time::sleep(jitter(b.move_interval, arrival.index, u64::MAX) / 4).await;
    while Instant::now() < end {
        step += 1;
        let (kind, method, action) = if !admitted {
            (Kind::Join, Method::POST, "join")
        } else if b.leaderboard_every > 0 && step % u64::from(b.leaderboard_every) == 0 {
            (Kind::Play, Method::GET, "leaderboard")
        } else {
            (Kind::Play, Method::POST, "move")
        };
        let url = format!("{}/hunts/{}/{action}", b.base, b.hunt);
        let mut headers = vec![(HUNTER_HEADER, id.as_str())];
        if let Some(t) = &ticket {
            headers.push(("x-huntgate-ticket", t.as_str()));
        }
        let started = Instant::now();
        let answer: Option<Answer> = http.send(method, &url, &headers).await.ok();
        let latency = started.elapsed();
        let status = answer.as_ref().map(|a| a.status);
        let outcome = Outcome::of_status(status);
        rec.record(kind, outcome);
        if let Some(t) = answer.as_ref().and_then(|a| a.ticket.clone()) {
            ticket = Some(t);
        }
        let retry = answer
            .as_ref()
            .and_then(|a| a.retry_after_s)
            .map(Duration::from_secs);
        let wait = match (kind, outcome) {
            (Kind::Join, Outcome::Ok) => {
                admitted = true;
                rec.playing.fetch_add(1, Ordering::Relaxed);
                if !ever_admitted {
                    ever_admitted = true;
                    rec.with(|c| c.hunters_admitted += 1);
                }
                jitter(b.move_interval, arrival.index, step)
            }
            (Kind::Play, Outcome::Ok) => {
                if action == "leaderboard" {
                    let micros = latency.as_micros().min(u128::from(u64::MAX)) as u64;
                    rec.with(|c| c.leaderboard.record(micros));
                }
                jitter(b.move_interval, arrival.index, step)
            }
            (Kind::Play, Outcome::Rejected) => {
                if !ever_frozen {
                    ever_frozen = true;
                    rec.with(|c| c.hunters_frozen += 1);
                }
                retry.unwrap_or(b.failure_backoff)
            }
            (Kind::Play, Outcome::Failed) if status == Some(409) => {
                // The game forgot the session (it expired): join again.
                admitted = false;
                rec.playing.fetch_sub(1, Ordering::Relaxed);
                Duration::ZERO
            }
            _ => retry.unwrap_or(b.failure_backoff),
        };
        let wake = (Instant::now() + wait).min(end);
        tokio::time::sleep_until(wake).await;
    }
    if admitted {
        rec.playing.fetch_sub(1, Ordering::Relaxed);
        // Done playing: the service ends the session (and huntgate frees the slot).
        let url = format!("{}/hunts/{}/finish", b.base, b.hunt);
        let mut headers = vec![(HUNTER_HEADER, id.as_str())];
        if let Some(t) = &ticket {
            headers.push(("x-huntgate-ticket", t.as_str()));
        }
        // Not counted: the run's numbers are those of playing hunters.
        let _ = http.send(Method::POST, &url, &headers).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let base = Duration::from_millis(3000);
        for step in 0..1000 {
            let j = jitter(base, 7, step);
            assert!(j >= Duration::from_millis(2400) && j <= Duration::from_millis(3600));
        }
    }

    #[test]
    fn the_recorder_separates_windows_from_totals() {
        let r = Recorder::default();
        r.record(Kind::Join, Outcome::Ok);
        r.record(Kind::Play, Outcome::Rejected);
        assert_eq!(r.take_window().freezes, 1);
        assert_eq!(r.take_window(), Tally::default());
        r.record(Kind::Play, Outcome::Rejected);
        assert_eq!(r.totals().tally.freezes, 2);
        assert_eq!(r.totals().tally.joins_admitted, 1);
    }
}
