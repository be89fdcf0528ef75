//! One hunt's leases across the fleet: per proxy what it was granted, what it may still be
//! acting on, what it counts and what it asks for.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::fair::{self, Want};
use super::{AllocatorConfig, Grant, Report};
use crate::clock::Millis;

/// Hunts with up to this many known proxies are computed exactly at every report (every
/// proxy's want and held seats); larger ones from running sums refreshed every
/// [`REFRESH_MS`] (see [`HuntAllocation::report`]).
pub const EXACT_UP_TO: usize = 64;
/// How often a large hunt's running sums are recomputed from scratch.
pub const REFRESH_MS: Millis = 1_000;

/// Derived values kept beside the state, never stored nor compared: equal to any other,
/// so a state read back from JSON equals the one written.
#[derive(Debug, Clone, Copy, Default)]
pub struct Derived<T>(pub T);

impl<T> PartialEq for Derived<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> Eq for Derived<T> {}

/// One proxy's part in its hunt's running sums.
#[derive(Debug, Clone, Copy, Default)]
pub struct Contribution {
    /// Its held seats as last counted.
    pub held: u32,
    /// Its want's `active` as last counted.
    pub active: u32,
}

/// A large hunt's running sums (see [`HuntAllocation::report`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Sums {
    /// When they were last recomputed from scratch (None: never).
    pub refreshed_ms: Option<Millis>,
    /// The limit they were computed for.
    pub limit: u32,
    /// Σ of the proxies' contributions' held seats: never below the true Σ held (a
    /// proxy's held seats only fall with time between its reports).
    pub held: u64,
    /// Σ of the contributions' active.
    pub active: u64,
    /// The water level of the spare at the last recomputation.
    pub level: fair::Level,
}

/// At most this many claims are kept per proxy; more are merged conservatively (the larger
/// share with the later end). Two or three is the usual count.
const MAX_CLAIMS: usize = 8;

/// A share a proxy may still be acting on, and the latest time its lease can end
/// (governor clock, before the expiry margin).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The share.
    pub share: u32,
    /// The latest end of the lease that carries it.
    pub until_ms: Millis,
}

/// One proxy's lease on one hunt.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProxyLease {
    /// The share granted at the latest exchange (None: not granted by this state yet).
    pub granted: Option<u32>,
    /// The fair target computed at the latest exchange (before the clamp).
    pub target: u32,
    /// End of the latest grant's lease: `processed at + lease_ms` (governor clock). The
    /// entry is dropped `expiry_margin_ms` after it.
    pub lease_until_ms: Millis,
    /// Every share the proxy may still be acting on (see [`ProxyLease::committed`]).
    pub claims: Vec<Claim>,
    /// Sessions the proxy reported at its latest exchange.
    pub active: u32,
    /// Joins it rejected between its last two reports (unmet demand).
    pub demand: u32,
    /// Increase of `active` between its last two reports (joins it admitted, net).
    pub growth: u32,
    /// The share it reported enforcing at its latest exchange.
    pub reported_share: Option<u32>,
    /// When its latest report was processed.
    pub last_report_ms: Millis,
    /// Every seat the proxy could have filled as of its latest exchange: its active
    /// count and the largest share it may have been acting on.
    #[serde(default)]
    pub bound: u32,
    /// A hash of the reporting process's incarnation (0: unknown): a new process under
    /// the same proxy id does not erase what its predecessor may have admitted.
    #[serde(default)]
    pub incarnation: u64,
    /// Its part in the hunt's running sums (large hunts only).
    #[serde(skip)]
    pub counted: Derived<Contribution>,
    /// The session TTL the proxy reported (0: unknown). Its sessions can outlive its
    /// lease by this much: their hunters may keep playing through other proxies,
    /// uncounted there until their tickets' next renewal.
    #[serde(default)]
    pub session_ttl_ms: Millis,
}

fn live(until_ms: Millis, now_ms: Millis, config: &AllocatorConfig) -> bool {
    now_ms < until_ms.saturating_add(config.expiry_margin_ms)
}

impl ProxyLease {
    /// Until when the proxy's seats stay held after its last report: the end of its
    /// latest lease plus, when it reported its session TTL, that TTL (plus the expiry
    /// margin). A proxy that stopped reporting because it died renewed no session after
    /// that; the lease length covers the time between its last report and its end.
    pub fn held_until_ms(&self) -> Millis {
        self.lease_until_ms.saturating_add(self.session_ttl_ms)
    }

    /// Whether the proxy stopped exchanging: its lease ended and it has not reported
    /// within a lease length (a proxy being processed right now is never silent).
    pub fn silent(&self, now_ms: Millis, config: &AllocatorConfig) -> bool {
        let recent = self.last_report_ms.saturating_add(config.lease_ms);
        !live(self.lease_until_ms.max(recent), now_ms, config)
    }

    /// Whether the governor still counts the proxy at `now_ms`.
    pub fn known(&self, now_ms: Millis, config: &AllocatorConfig) -> bool {
        live(self.held_until_ms(), now_ms, config)
    }

    /// The largest share the proxy may still be acting on at `now_ms`: the latest grant
    /// (a raised grant counts at once), and any larger share it held before that it has not
    /// yet acknowledged giving up, each until its lease (plus the margin) has ended.
    pub fn committed(&self, now_ms: Millis, config: &AllocatorConfig) -> u32 {
        self.claims
            .iter()
            .filter(|c| live(c.until_ms, now_ms, config))
            .map(|c| c.share)
            .max()
            .unwrap_or(0)
    }

    /// Seats the proxy occupies as far as anyone else is concerned: its active count,
    /// the largest share it may still be acting on, and — until the sessions it may have
    /// admitted must have expired ([`ProxyLease::held_until_ms`]) — every seat it could
    /// have filled as of its latest exchange ([`ProxyLease::bound`]). So a proxy whose
    /// sessions exceed its share (drain-down) still holds them, and one that stops
    /// exchanging (a crash, a scale-in, a partition) keeps its seats after its lease:
    /// its hunters may go on playing through other proxies, uncounted there until their
    /// tickets' next renewal, and handing those seats to others would admit past the limit.
    pub fn held(&self, now_ms: Millis, config: &AllocatorConfig) -> u32 {
        let committed = self.committed(now_ms, config);
        if self.known(now_ms, config) {
            self.active.max(self.bound).max(committed)
        } else {
            committed
        }
    }

    fn want(&self, now_ms: Millis, config: &AllocatorConfig) -> Want {
        if self.silent(now_ms, config) {
            // Silent: it asks for nothing, and keeps what it holds.
            return Want {
                active: self.held(now_ms, config),
                extra: 0,
            };
        }
        Want {
            active: self.active,
            extra: self
                .demand
                .saturating_add(self.growth)
                .saturating_add(config.headroom(self.active)),
        }
    }

    /// Takes in a report: the acknowledgement first, then the counts.
    fn observe(
        &mut self,
        report: &Report,
        now_ms: Millis,
        learning_until_ms: Option<Millis>,
        config: &AllocatorConfig,
    ) {
        self.claims.retain(|c| live(c.until_ms, now_ms, config));
        let enforced = report.share.unwrap_or(0);
        if self.granted == Some(enforced) {
            // It applied our latest answer: every older grant is superseded, and the only
            // answer it may still apply is the one to this report.
            self.claims = if enforced > 0 && live(self.lease_until_ms, now_ms, config) {
                vec![Claim {
                    share: enforced,
                    until_ms: self.lease_until_ms,
                }]
            } else {
                Vec::new()
            };
        } else if enforced > 0 {
            // Our latest answer did not arrive (or this report overtook an earlier one):
            // keep every claim, and count what it says it enforces until the latest end any
            // lease carrying that much could have.
            let known = self
                .claims
                .iter()
                .filter(|c| c.share >= enforced)
                .map(|c| c.until_ms)
                .max();
            let until_ms = match (known, learning_until_ms) {
                (Some(k), Some(l)) => k.max(l),
                (Some(k), None) => k,
                (None, Some(l)) => l,
                // A share this state never granted: count it for a full lease from now.
                (None, None) => now_ms.saturating_add(config.lease_ms),
            };
            self.claims.push(Claim {
                share: enforced,
                until_ms,
            });
        }
        self.growth = if self.granted.is_some() {
            report.active.saturating_sub(self.active)
        } else {
            0
        };
        self.active = report.active;
        self.demand = report.rejected;
        self.reported_share = report.share;
        self.last_report_ms = now_ms;
        self.session_ttl_ms = report.session_ttl_ms;
        self.incarnation = report.incarnation;
    }

    /// Records a grant and tidies the claims.
    fn grant(&mut self, share: u32, target: u32, lease_until_ms: Millis) {
        self.granted = Some(share);
        self.target = target;
        self.lease_until_ms = lease_until_ms;
        self.claims.push(Claim {
            share,
            until_ms: lease_until_ms,
        });
        self.claims.retain(|c| c.share > 0);
        // Largest share first; keep a claim only if it ends later than every larger one.
        self.claims
            .sort_by(|a, b| b.share.cmp(&a.share).then(b.until_ms.cmp(&a.until_ms)));
        let mut latest = None;
        self.claims.retain(|c| {
            let keep = latest.is_none_or(|l| c.until_ms > l);
            if keep {
                latest = Some(c.until_ms);
            }
            keep
        });
        while self.claims.len() > MAX_CLAIMS {
            let first = self.claims.remove(0);
            if let Some(next) = self.claims.first_mut() {
                next.share = next.share.max(first.share);
                next.until_ms = next.until_ms.max(first.until_ms);
            }
        }
        let largest_claim = self.claims.iter().map(|c| c.share).max().unwrap_or(0);
        self.bound = self.active.max(largest_claim);
    }
}

/// One hunt's allocation state across the proxies that serve it. Serializable as a whole,
/// so the governor can keep it in a shared store.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HuntAllocation {
    /// The fleet limit passed with the latest report.
    pub limit: u32,
    /// Until then, grants add no new capacity (see [`HuntAllocation::report`]); 0: no
    /// learning.
    pub learning_until_ms: Millis,
    /// Per proxy id.
    pub proxies: BTreeMap<String, ProxyLease>,
    /// Running sums of a large hunt (recomputed after a load).
    #[serde(skip)]
    pub sums: Derived<Sums>,
}

/// Read-only summary of one hunt, for `/metrics` and the JSON listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HuntView {
    /// The fleet limit passed with the latest report.
    pub limit: u32,
    /// Σ of the latest grants of the proxies holding a lease.
    pub granted: u64,
    /// Σ of what each proxy may still be acting on (≤ limit, see the module docs).
    pub committed: u64,
    /// Σ of the proxies' reported active sessions.
    pub active: u64,
    /// Σ of the seats each proxy holds as far as the others are concerned
    /// ([`ProxyLease::held`]), silent proxies included (≤ limit unless drained down).
    pub held: u64,
    /// Proxies holding a non-zero share.
    pub holders: usize,
    /// Proxies known (holding a lease, zero or not, or silent with sessions that may
    /// still be in play).
    pub proxies_known: usize,
    /// Known proxies whose lease ended without renewal (their sessions still held).
    pub silent: usize,
    /// Whether the hunt is in its learning period.
    pub learning: bool,
    /// Per proxy id.
    pub proxies: BTreeMap<String, ProxyView>,
}

/// Read-only summary of one proxy's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProxyView {
    /// The latest grant.
    pub share: u32,
    /// What it may still be acting on.
    pub committed: u32,
    /// Its fair target at the latest exchange.
    pub target: u32,
    /// Its reported active sessions.
    pub active: u32,
    /// Its reported unmet demand.
    pub demand: u32,
    /// The seats it holds as far as the others are concerned.
    pub held: u32,
    /// Its lease ended without renewal: it is counted only for the sessions it may
    /// have admitted, until `held_until_ms`.
    pub silent: bool,
    /// End of its latest lease (governor clock, ms).
    pub lease_until_ms: Millis,
    /// Until when its seats stay held after its last report (governor clock, ms).
    pub held_until_ms: Millis,
}

/// `min(target, limit − others)`, never negative; during learning (`cap`) at most what
/// the proxy reports enforcing.
fn clamp_share(target: u32, limit: u32, others: u64, cap: Option<u32>) -> u32 {
    let room = u64::from(limit).saturating_sub(others);
    let share = u32::try_from(room.min(u64::from(target))).unwrap_or(target);
    cap.map_or(share, |cap| share.min(cap))
}

/// A large hunt's grant for `p` (which has just observed its report) from the running
/// sums, which it then updates with `p`'s new contribution.
fn grant_from_sums(
    p: &mut ProxyLease,
    sums: &mut Sums,
    limit: u32,
    cap: Option<u32>,
    now_ms: Millis,
    lease_until_ms: Millis,
    config: &AllocatorConfig,
) -> (u32, u32) {
    let before = p.counted.0;
    let want = p.want(now_ms, config);
    let others = sums.held.saturating_sub(u64::from(before.held));
    sums.active = sums
        .active
        .saturating_sub(u64::from(before.active))
        .saturating_add(u64::from(want.active));
    let target = if sums.active <= u64::from(limit) {
        want.active.saturating_add(sums.level.fill(want.extra))
    } else {
        let share = u64::from(limit) * u64::from(want.active) / sums.active;
        u32::try_from(share).unwrap_or(want.active)
    };
    let share = clamp_share(target, limit, others, cap);
    p.grant(share, target, lease_until_ms);
    let held = p.held(now_ms, config);
    p.counted.0 = Contribution {
        held,
        active: want.active,
    };
    sums.held = others.saturating_add(u64::from(held));
    (share, target)
}

impl HuntAllocation {
    /// An empty hunt; `learning_until_ms` is the end of the governor's learning period
    /// (0 when the state is known to be complete).
    pub fn new(learning_until_ms: Millis) -> Self {
        Self {
            learning_until_ms,
            ..Self::default()
        }
    }

    /// Whether grants are still capped by what proxies report enforcing.
    pub fn learning(&self, now_ms: Millis) -> bool {
        now_ms < self.learning_until_ms
    }

    /// Drops claims whose lease (plus margin) ended, and proxies no longer counted
    /// ([`ProxyLease::known`]: their lease and the sessions they may have admitted have
    /// ended): their capacity returns to the pool.
    pub fn expire(&mut self, now_ms: Millis, config: &AllocatorConfig) {
        self.proxies.retain(|_, p| p.known(now_ms, config));
        for p in self.proxies.values_mut() {
            p.claims.retain(|c| live(c.until_ms, now_ms, config));
        }
    }

    /// One proxy's exchange for this hunt, processed at `now_ms` (governor clock).
    ///
    /// 1. Expired leases are dropped ([`HuntAllocation::expire`]).
    /// 2. The report's `share` acknowledges: if it is the latest grant, every older claim of
    ///    the proxy is released; otherwise (the answer was lost, or reports crossed) all
    ///    claims stay until their leases end, and the reported share is added as a claim.
    /// 3. The proxy's target is computed over every known proxy ([`fair::targets`]), with
    ///    `extra = demand + growth + headroom`.
    /// 4. The grant is `min(target, limit − Σ others' held)`, never negative, where a
    ///    proxy's held is `max(active, committed)`. During learning it is further capped by
    ///    the share the proxy reports enforcing (0 without one): no new capacity.
    /// 5. The grant becomes a claim valid for `lease_ms` from now.
    ///
    /// The grant can be below the proxy's active count only when the others' held plus this
    /// proxy's active exceed the limit: after a limit cut (drain-down), while a learning
    /// governor caps it, or when the proxy reports more sessions than it could have admitted
    /// (adopted sessions, a fallback share above 0). With a limit that covers every proxy's
    /// held seats it never is.
    pub fn report(
        &mut self,
        proxy: &str,
        report: Report,
        limit: u32,
        now_ms: Millis,
        config: &AllocatorConfig,
    ) -> Grant {
        let large = self.tidy_for(now_ms, limit, config);
        self.limit = limit;
        self.retire_predecessor(proxy, &report);
        let learning = self.learning(now_ms);
        let learning_until = learning.then_some(self.learning_until_ms);
        if !self.proxies.contains_key(proxy) {
            self.proxies.insert(proxy.to_owned(), ProxyLease::default());
        }
        let lease_until_ms = now_ms.saturating_add(config.lease_ms);
        let cap = learning.then(|| report.share.unwrap_or(0));
        let (share, target) = if large {
            let sums = &mut self.sums.0;
            match self.proxies.get_mut(proxy) {
                Some(p) => {
                    p.observe(&report, now_ms, learning_until, config);
                    grant_from_sums(p, sums, limit, cap, now_ms, lease_until_ms, config)
                }
                None => (0, 0),
            }
        } else {
            if let Some(p) = self.proxies.get_mut(proxy) {
                p.observe(&report, now_ms, learning_until, config);
            }
            let (target, others) = self.exact_target_and_others(proxy, limit, now_ms, config);
            let share = clamp_share(target, limit, others, cap);
            if let Some(p) = self.proxies.get_mut(proxy) {
                p.grant(share, target, lease_until_ms);
            }
            (share, target)
        };
        Grant {
            share,
            target,
            lease_ms: config.lease_ms,
            lease_until_ms,
            learning,
        }
    }

    /// Every proxy's want and held seats, from scratch: `proxy`'s fair target and the
    /// others' held seats.
    fn exact_target_and_others(
        &self,
        proxy: &str,
        limit: u32,
        now_ms: Millis,
        config: &AllocatorConfig,
    ) -> (u32, u64) {
        let wants: Vec<Want> = self
            .proxies
            .values()
            .map(|p| p.want(now_ms, config))
            .collect();
        let target = self
            .proxies
            .keys()
            .zip(fair::targets(limit, &wants))
            .find(|(id, _)| id.as_str() == proxy)
            .map_or(0, |(_, t)| t);
        let others: u64 = self
            .proxies
            .iter()
            .filter(|(id, _)| id.as_str() != proxy)
            .map(|(_, p)| u64::from(p.held(now_ms, config)))
            .sum();
        (target, others)
    }

    /// Recomputes a large hunt's running sums when they are older than [`REFRESH_MS`]
    /// or were computed for another limit (and drops expired leases first).
    fn refresh_if_due(&mut self, now_ms: Millis, limit: u32, config: &AllocatorConfig) {
        let sums = self.sums.0;
        let due = sums.limit != limit
            || sums
                .refreshed_ms
                .is_none_or(|at| now_ms >= at.saturating_add(REFRESH_MS) || now_ms < at);
        if !due {
            return;
        }
        self.expire(now_ms, config);
        let mut held = 0u64;
        let mut active = 0u64;
        let mut extras = Vec::with_capacity(self.proxies.len());
        for p in self.proxies.values_mut() {
            let want = p.want(now_ms, config);
            let h = p.held(now_ms, config);
            p.counted.0 = Contribution {
                held: h,
                active: want.active,
            };
            held += u64::from(h);
            active += u64::from(want.active);
            extras.push(want.extra);
        }
        let level = if active <= u64::from(limit) {
            fair::level(u64::from(limit) - active, &extras)
        } else {
            fair::Level::Capped(0)
        };
        self.sums.0 = Sums {
            refreshed_ms: Some(now_ms),
            limit,
            held,
            active,
            level,
        };
    }

    /// Drops expired leases now if the hunt is small, else when its running sums are
    /// due (a large hunt's expired entries linger up to [`REFRESH_MS`], counted: safe).
    pub fn tidy(&mut self, now_ms: Millis, config: &AllocatorConfig) {
        let limit = self.limit;
        self.tidy_for(now_ms, limit, config);
    }

    /// [`HuntAllocation::tidy`] for a report against `limit`; whether the hunt is large
    /// (grants from running sums).
    fn tidy_for(&mut self, now_ms: Millis, limit: u32, config: &AllocatorConfig) -> bool {
        if self.proxies.len() > EXACT_UP_TO {
            self.refresh_if_due(now_ms, limit, config);
            true
        } else {
            self.expire(now_ms, config);
            // Exact reports do not keep the sums: recompute them once the hunt is large.
            self.sums.0.refreshed_ms = None;
            false
        }
    }

    /// A report from a new process under a known proxy id (an Envoy restarted in the
    /// same pod): the predecessor's entry stays, silent, under `<id>#<incarnation>` until
    /// the sessions it may have admitted have expired (their hunters may be playing on).
    fn retire_predecessor(&mut self, proxy: &str, report: &Report) {
        let restarted = self.proxies.get(proxy).is_some_and(|p| {
            p.incarnation != 0 && report.incarnation != 0 && p.incarnation != report.incarnation
        });
        if !restarted {
            return;
        }
        if let Some(old) = self.proxies.remove(proxy) {
            let key = format!("{proxy}#{:016x}", old.incarnation);
            self.proxies.insert(key, old);
        }
    }

    /// Σ of what every proxy may still be acting on at `now_ms`.
    pub fn committed_total(&self, now_ms: Millis, config: &AllocatorConfig) -> u64 {
        self.proxies
            .values()
            .map(|p| u64::from(p.committed(now_ms, config)))
            .sum()
    }

    /// Σ of every proxy's held seats, `max(active, committed)`, at `now_ms`.
    pub fn held_total(&self, now_ms: Millis, config: &AllocatorConfig) -> u64 {
        self.proxies
            .values()
            .map(|p| u64::from(p.held(now_ms, config)))
            .sum()
    }

    /// The summary for metrics and JSON, as of `now_ms` (proxies no longer counted are
    /// left out; a silent one shows share 0).
    pub fn view(&self, now_ms: Millis, config: &AllocatorConfig) -> HuntView {
        let proxies: BTreeMap<String, ProxyView> = self
            .proxies
            .iter()
            .filter(|(_, p)| p.known(now_ms, config))
            .map(|(id, p)| {
                let silent = p.silent(now_ms, config);
                let view = ProxyView {
                    share: if silent { 0 } else { p.granted.unwrap_or(0) },
                    committed: p.committed(now_ms, config),
                    target: p.target,
                    active: p.active,
                    demand: p.demand,
                    held: p.held(now_ms, config),
                    silent,
                    lease_until_ms: p.lease_until_ms,
                    held_until_ms: p.held_until_ms(),
                };
                (id.clone(), view)
            })
            .collect();
        HuntView {
            limit: self.limit,
            granted: proxies.values().map(|p| u64::from(p.share)).sum(),
            committed: proxies.values().map(|p| u64::from(p.committed)).sum(),
            active: proxies.values().map(|p| u64::from(p.active)).sum(),
            held: proxies.values().map(|p| u64::from(p.held)).sum(),
            holders: proxies.values().filter(|p| p.committed > 0).count(),
            proxies_known: proxies.len(),
            silent: proxies.values().filter(|p| p.silent).count(),
            learning: self.learning(now_ms),
            proxies,
        }
    }
}
