//! Fleet-wide hunt limits (issue 10): the pure lease allocator.
//!
//! A hunt's limit, `floor(max_hunters × ratio)`, holds for the whole fleet of Envoy
//! processes. Each proxy (one id per process) reports about every second, per hunt, its
//! [`Report`]: `active` sessions, joins `rejected` since its previous report, and the
//! `share` it enforces now (None without a lease). The governor answers a [`Grant`]: the new
//! `share`, valid for `lease_ms` from when the proxy sent the report. A proxy admits a join
//! only while its active count is below the share of a lease that has not ended; once its
//! lease ends without renewal it falls back to its configured safe share.
//!
//! Everything here is pure: plain values over (state, report, limit, now), no I/O, no clock,
//! and the state ([`Fleet`], [`HuntAllocation`]) is serde-serializable so that it can live
//! in a shared store.
//!
//! # Guarantees
//!
//! - **Σ committed ≤ limit.** Per proxy, `committed` is the largest share it may still be
//!   acting on: a raised grant counts at once; a lowered one counts as the old value until
//!   the proxy acknowledges the lower one (reports it as its `share`) or the old lease ends.
//!   Each grant is at most `limit − Σ others' held`, where held is `max(active,
//!   committed)`, so no exchange makes Σ committed exceed the limit, or exceed it further
//!   after a cut (a report can only add what a proxy really enforces and the state did not
//!   know, as after a restart). After a cut the excess is gone once every lease granted
//!   before it has ended, within `lease_ms + expiry_margin_ms`; after a restart, once the
//!   learning period and the margin have passed. Capacity taken from one proxy is granted to
//!   another only after the first acknowledged its smaller share or its lease expired.
//! - **No target below a proxy's active count while the limit allows** (`limit ≥ Σ active`):
//!   see [`fair::targets`]. The grant itself is below the proxy's active count only when
//!   others still hold the seats (see [`HuntAllocation::report`]).
//! - **Max-min fair spare.** What the limit leaves over the fleet's active sessions is
//!   water-filled over each proxy's `extra = rejected + growth + headroom`
//!   ([`AllocatorConfig::headroom`]), where `growth` is the rise of its active count since
//!   its previous report (joins it admitted: demand it met). A proxy without demand (nothing
//!   rejected, no growth) holds at most `active + headroom`; unwanted spare stays with the
//!   governor for whoever shows demand next.
//! - **Silence returns capacity.** A proxy that stops reporting is dropped when its lease
//!   (plus `expiry_margin_ms`) ends; a new proxy gets a share at its first report if there is
//!   room.
//! - **Learning.** A [`Fleet::starting`] state (a governor that started or lost its state)
//!   grants no new capacity for `learning_ms`: each grant is capped by the share the proxy
//!   reports enforcing, and that share is counted as committed until the learning period
//!   ends. Afterwards every lease of the previous incarnation has been reported or has ended.
//!
//! # Worked example (`governor/tests/fleet.rs`, default [`AllocatorConfig`])
//!
//! Three proxies exchange once a second; hunters arrive at 42, 12 and 6 a second (70 / 20 /
//! 10 %) against a limit of 100. After the second round of exchanges all 100 seats are in
//! use, split 78 / 14 / 8 as the arrival rates had it (filled seats are never taken back).
//! When 60 of the first proxy's sessions end and the third gets a burst, the seats reach the
//! third proxy in 3 rounds: its grant is lowered, it acknowledges, the other's next exchange
//! gets them. A proxy that dies is counted for `lease_ms + expiry_margin_ms` (5.5 s) after
//! its last exchange, then its seats go to the others; a restarted governor grants nothing
//! new for `learning_ms` (5.5 s).
//!
//! A report to a hunt of up to [`EXACT_UP_TO`] known proxies is computed exactly, in
//! O(n · log w) (w: the largest want). A larger hunt grants from running sums (Σ held, Σ
//! active and the water level of the spare) recomputed from scratch every
//! [`REFRESH_MS`]: a report then costs O(log n), the others' held seats are never
//! under-counted (a proxy's held seats only fall with time between its reports, so a
//! stale sum errs towards less room), and a target may lag a demand change by up to
//! [`REFRESH_MS`].
//!
//! # Assumptions about the proxies
//!
//! One exchange in flight per proxy; a proxy applies only the answer to its latest report
//! and counts each lease from its own send time. Its safe share must be 0 for Σ committed to
//! bound the fleet exactly (a safe share `s > 0` adds up to `s` per proxy without a lease).
//! A proxy that is cut off but still running keeps its sessions after its lease ends; the
//! allocator no longer counts them once it drops the proxy.

mod config;
pub mod ends;
pub mod exchange;
pub mod fair;
mod hunt;
pub mod shared;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::Millis;

pub use config::{AllocatorConfig, ConfigError};
pub use hunt::{
    Claim, Contribution, Derived, HuntAllocation, HuntView, ProxyLease, ProxyView, Sums,
    EXACT_UP_TO, REFRESH_MS,
};

/// What a proxy says about one hunt at one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Report {
    /// Sessions it counts for the hunt now.
    pub active: u32,
    /// Joins it rejected since its previous report (unmet demand).
    pub rejected: u32,
    /// The share it enforces now (the last grant it received, while its lease runs);
    /// None if it holds no lease for the hunt.
    #[serde(default)]
    pub share: Option<u32>,
    /// The proxy's session TTL (ms; 0: not reported), from the report's top-level
    /// `session_ttl_s`: how long its sessions may outlive its last report.
    #[serde(skip)]
    pub session_ttl_ms: Millis,
    /// A hash of the reporting process's incarnation (0: not reported), from the
    /// report's top-level `incarnation`.
    #[serde(skip)]
    pub incarnation: u64,
}

/// The governor's answer for one hunt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Grant {
    /// The share to enforce.
    pub share: u32,
    /// The proxy's fair target (the share it converges to once others hand seats back).
    pub target: u32,
    /// How long the share is valid, counted from when the proxy sent its report.
    pub lease_ms: Millis,
    /// End of the lease on the governor's clock (processing time + `lease_ms`).
    pub lease_until_ms: Millis,
    /// Whether the grant was capped by the learning period.
    pub learning: bool,
}

/// Every hunt's allocation. `Default` is a state known to be complete (no learning):
/// deserialize a stored one, or use [`Fleet::starting`] when none is available.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Fleet {
    /// End of the learning period of this governor incarnation (0: none).
    pub learning_until_ms: Millis,
    /// Per canonical hunt id.
    pub hunts: BTreeMap<String, HuntAllocation>,
}

impl Fleet {
    /// A governor that starts at `now_ms` without the previous incarnation's state: it learns
    /// for `config.learning_ms`.
    pub fn starting(now_ms: Millis, config: &AllocatorConfig) -> Self {
        Self {
            learning_until_ms: now_ms.saturating_add(config.learning_ms),
            hunts: BTreeMap::new(),
        }
    }

    /// One proxy's exchange for one hunt (see [`HuntAllocation::report`]). A hunt seen for
    /// the first time inherits the fleet's learning period.
    pub fn report(
        &mut self,
        hunt: &str,
        proxy: &str,
        report: Report,
        limit: u32,
        now_ms: Millis,
        config: &AllocatorConfig,
    ) -> Grant {
        // A known hunt without allocating its id; a new one is inserted once.
        if let Some(allocation) = self.hunts.get_mut(hunt) {
            return allocation.report(proxy, report, limit, now_ms, config);
        }
        let mut fresh = HuntAllocation::new(self.learning_until_ms);
        let grant = fresh.report(proxy, report, limit, now_ms, config);
        self.hunts.insert(hunt.to_owned(), fresh);
        grant
    }

    /// Drops expired leases (a large hunt's at most every `REFRESH_MS`), and hunts no
    /// proxy holds a lease on any more.
    pub fn expire(&mut self, now_ms: Millis, config: &AllocatorConfig) {
        for hunt in self.hunts.values_mut() {
            hunt.tidy(now_ms, config);
        }
        self.hunts.retain(|_, h| !h.proxies.is_empty());
    }

    /// Per hunt summaries as of `now_ms`.
    pub fn view(&self, now_ms: Millis, config: &AllocatorConfig) -> BTreeMap<String, HuntView> {
        self.hunts
            .iter()
            .map(|(id, h)| (id.clone(), h.view(now_ms, config)))
            .collect()
    }
}
