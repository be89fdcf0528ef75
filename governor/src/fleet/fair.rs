//! Max-min fair targets: what each proxy should hold if nothing else were in the way.
//!
//! [`targets`] is a pure function of the fleet limit and each proxy's [`Want`]; the
//! allocator then clamps the target by what other proxies still hold (see
//! [`super::HuntAllocation::report`]).

/// What one proxy needs: the sessions it counts now and how many more seats it asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Want {
    /// Sessions the proxy counts now (its floor while the limit allows).
    pub active: u32,
    /// Seats wanted beyond `active`: unmet demand + recent growth + headroom.
    pub extra: u32,
}

/// One target per want, in the same order.
///
/// - **Normal** (`Σ active ≤ limit`): each proxy keeps its `active`, and the rest of the limit,
///   `limit − Σ active`, is water-filled over the `extra`s ([`water_fill`]). So every target is
///   at least the proxy's active count, no target exceeds `active + extra`, and spare that
///   nobody wants stays unallocated.
/// - **Drain-down** (`Σ active > limit`, after a cut): targets shrink proportionally,
///   `floor(limit × active / Σ active)`, so every target is at most the proxy's active count
///   and no proxy admits a new join until the fleet is back under the limit. Nothing is ever
///   evicted: sessions end on their own.
///
/// In both cases `Σ targets ≤ limit`.
pub fn targets(limit: u32, wants: &[Want]) -> Vec<u32> {
    let limit = u64::from(limit);
    let active: u64 = wants.iter().map(|w| u64::from(w.active)).sum();
    if active <= limit {
        let extras: Vec<u32> = wants.iter().map(|w| w.extra).collect();
        let fills = water_fill(limit - active, &extras);
        wants
            .iter()
            .zip(fills)
            .map(|(w, f)| w.active.saturating_add(f))
            .collect()
    } else {
        wants
            .iter()
            .map(|w| {
                // active > limit ≥ 0, so the division is defined; the quotient ≤ w.active.
                let share = limit * u64::from(w.active) / active;
                u32::try_from(share).unwrap_or(w.active)
            })
            .collect()
    }
}

/// Max-min fair division of `capacity` over `wants`: the largest level λ such that
/// `Σ min(want, λ) ≤ capacity` gives each `min(want, λ)`; the units left over (fewer than
/// the number of wants above λ) go one each to the first wants above λ, in slice order
/// (the allocator lists proxies by id). When `Σ wants ≤ capacity`, each gets its want.
///
/// The result is exactly what handing out one unit at a time to the least-served
/// unsatisfied want (lowest index first) would give.
pub fn water_fill(capacity: u64, wants: &[u32]) -> Vec<u32> {
    let total: u64 = wants.iter().map(|&w| u64::from(w)).sum();
    if total <= capacity {
        return wants.to_vec();
    }
    let filled = |level: u32| -> u64 { wants.iter().map(|&w| u64::from(w.min(level))).sum() };
    // filled(lo) ≤ capacity < filled(hi).
    let mut lo = 0u32;
    let mut hi = wants.iter().copied().max().unwrap_or(0);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if filled(mid) <= capacity {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let mut left = capacity.saturating_sub(filled(lo));
    wants
        .iter()
        .map(|&w| {
            if w > lo && left > 0 {
                left -= 1;
                lo + 1
            } else {
                w.min(lo)
            }
        })
        .collect()
}

/// How [`water_fill`] would fill a want, summarized by one number so that one proxy's
/// fill can be recomputed without the others' wants (large fleets, see
/// `HuntAllocation::report`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Level {
    /// The capacity covers every want: each gets all of its want.
    #[default]
    All,
    /// Each gets at most this many (the water level, plus one when some wants above it
    /// got one unit more): never less than [`water_fill`] gives.
    Capped(u32),
}

impl Level {
    /// What a want of `want` gets at this level.
    pub fn fill(self, want: u32) -> u32 {
        match self {
            Level::All => want,
            Level::Capped(cap) => want.min(cap),
        }
    }
}

/// The [`Level`] of `water_fill(capacity, wants)`.
pub fn level(capacity: u64, wants: &[u32]) -> Level {
    let fills = water_fill(capacity, wants);
    if fills == wants {
        return Level::All;
    }
    Level::Capped(fills.iter().copied().max().unwrap_or(0))
}
