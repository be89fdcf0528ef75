//! The waiting room: one FIFO queue per hunt and Envoy process, kept in shared
//! data ([`crate::store`]: `queue/<slot>`, CAS-updated like the counts), so that
//! every worker of the process sees one order.
//!
//! Every join of a hunt with a waiting room takes (or finds) its place, then
//! reads the hunt's count: a place at position `p` may take a seat only while
//! `p ≤ limit − active`. The count is read *after* the place, so the seats it
//! sees free cover every place ahead of it (those can only take seats it
//! already counted, and a place behind never passes it): a hunter never
//! overtakes an earlier place that is still live. A place is live until its
//! holder is not back within `retry_after_s + grace_s` of its last try
//! (abandoned) or `queue_ttl_s` after it was taken (expired).
//!
//! The estimated wait of position `p` is `p × T / n`: `n` hunters were admitted
//! from the queue in the `T` ms since it formed (the measured rate at which
//! seats go to the queue, i.e. free up while it is not empty). The window is
//! halved (`T/2`, `n/2`) once it passes [`RATE_WINDOW_MS`], so the rate follows
//! changes; it starts over when the queue empties; before the first admission
//! from the queue there is no estimate.

use crate::config::WaitingRoom;

/// Bytes of the queue value's header: owner tag u64, next seq u64, rate window
/// start ms u64, hunters admitted from the queue in the window u32.
const HEADER_BYTES: usize = 28;
/// Bytes of one place: seq u64 (top bit: the hunter was told to wait), hunter
/// key u64, taken at ms u64, last try ms u64.
pub const PLACE_BYTES: usize = 32;
/// The top bit of a stored seq: the place's holder got a queued reply.
const WAITED: u64 = 1 << 63;
/// Once the rate window is longer than this, it is halved.
pub const RATE_WINDOW_MS: u64 = 300_000;

/// One place in a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// Arrival order (per slot owner; starts at 1).
    pub seq: u64,
    /// The hunter's store key ([`crate::store::hunter_key`]).
    pub key: u64,
    /// When the place was taken (unix ms).
    pub issued_ms: u64,
    /// The holder's last try (unix ms).
    pub seen_ms: u64,
    /// Whether the holder got a queued reply (else the place is a join in flight).
    pub waited: bool,
}

/// Places dropped by [`Queue::prune`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Queued hunters not back within their retry window.
    pub abandoned: u32,
    /// Places older than `queue_ttl_s`.
    pub expired: u32,
}

impl Dropped {
    /// Adds another prune's drops.
    pub fn add(&mut self, other: Dropped) {
        self.abandoned = self.abandoned.saturating_add(other.abandoned);
        self.expired = self.expired.saturating_add(other.expired);
    }
}

/// A hunt's queue as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Queue {
    /// The slot owner's tag; a value of another owner reads as an empty queue.
    pub tag: u64,
    /// The seq of the next place.
    pub next_seq: u64,
    /// Start of the rate window (unix ms; 0: no window).
    pub window_start_ms: u64,
    /// Hunters admitted from the queue in the window.
    pub dequeued: u32,
    /// Places in arrival order.
    pub places: Vec<Place>,
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    crate::store::read_u64_at(bytes, at)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0)
}

/// Where a join stands after [`Queue::take_place`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// 1-based position (places ahead + 1).
    pub position: u32,
    /// The place.
    pub place: Place,
    /// Whether the place was taken by this call.
    pub new: bool,
}

impl Queue {
    /// An empty queue of `tag`.
    pub fn empty(tag: u64) -> Self {
        Self {
            tag,
            next_seq: 1,
            ..Self::default()
        }
    }

    /// Decodes a stored value for the slot owner `tag`: a short value or one of
    /// owner 0 is an empty queue; `None` when it belongs to another owner (the
    /// slot moved to another hunt).
    pub fn decode(bytes: &[u8], tag: u64) -> Option<Self> {
        if bytes.len() < HEADER_BYTES || u64_at(bytes, 0) == 0 {
            return Some(Self::empty(tag));
        }
        if u64_at(bytes, 0) != tag {
            return None;
        }
        let places = bytes
            .get(HEADER_BYTES..)
            .unwrap_or_default()
            .chunks_exact(PLACE_BYTES)
            .map(|raw| {
                let seq = u64_at(raw, 0);
                Place {
                    seq: seq & !WAITED,
                    waited: seq & WAITED != 0,
                    key: u64_at(raw, 8),
                    issued_ms: u64_at(raw, 16),
                    seen_ms: u64_at(raw, 24),
                }
            })
            .collect();
        Some(Self {
            tag,
            next_seq: u64_at(bytes, 8).max(1),
            window_start_ms: u64_at(bytes, 16),
            dequeued: u32_at(bytes, 24),
            places,
        })
    }

    /// The stored value.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_BYTES + self.places.len() * PLACE_BYTES);
        out.extend_from_slice(&self.tag.to_le_bytes());
        out.extend_from_slice(&self.next_seq.to_le_bytes());
        out.extend_from_slice(&self.window_start_ms.to_le_bytes());
        out.extend_from_slice(&self.dequeued.to_le_bytes());
        for place in &self.places {
            let seq = (place.seq & !WAITED) | if place.waited { WAITED } else { 0 };
            out.extend_from_slice(&seq.to_le_bytes());
            out.extend_from_slice(&place.key.to_le_bytes());
            out.extend_from_slice(&place.issued_ms.to_le_bytes());
            out.extend_from_slice(&place.seen_ms.to_le_bytes());
        }
        out
    }

    /// Drops the places that expired or whose holder stopped retrying; returns
    /// what was dropped (places of joins in flight are not counted).
    pub fn prune(&mut self, room: &WaitingRoom, now_ms: u64) -> Dropped {
        let mut dropped = Dropped::default();
        let ttl_ms = room.ttl_ms();
        let abandon_ms = room.abandon_after_ms();
        self.places.retain(|place| {
            let expired = place.issued_ms.saturating_add(ttl_ms) <= now_ms;
            let abandoned = place.seen_ms.saturating_add(abandon_ms) < now_ms;
            if place.waited && expired {
                dropped.expired += 1;
            } else if place.waited && abandoned {
                dropped.abandoned += 1;
            }
            !(expired || abandoned)
        });
        self.reset_window_if_idle();
        dropped
    }

    fn reset_window_if_idle(&mut self) {
        if !self.places.iter().any(|place| place.waited) {
            self.window_start_ms = 0;
            self.dequeued = 0;
        }
    }

    /// The place of `key` (refreshing its last try to `now_ms`), or a new one at
    /// the end; `None` when the key has none and the queue holds `max_queue` places.
    pub fn take_place(&mut self, room: &WaitingRoom, key: u64, now_ms: u64) -> Option<Standing> {
        let mut position = 0u32;
        for place in self.places.iter_mut() {
            position = position.saturating_add(1);
            if place.key == key {
                place.seen_ms = place.seen_ms.max(now_ms);
                return Some(Standing {
                    position,
                    place: *place,
                    new: false,
                });
            }
        }
        if self.places.len() >= room.max_queue as usize {
            return None;
        }
        let place = Place {
            seq: self.next_seq.max(1) & !WAITED,
            key,
            issued_ms: now_ms,
            seen_ms: now_ms,
            waited: false,
        };
        self.next_seq = place.seq.saturating_add(1);
        self.places.push(place);
        Some(Standing {
            position: position.saturating_add(1),
            place,
            new: true,
        })
    }

    /// Marks `key`'s place as told to wait (starting the rate window if none is
    /// running); returns its position, `None` if it has no place any more.
    pub fn mark_waited(&mut self, key: u64, now_ms: u64) -> Option<u32> {
        let at = self.places.iter().position(|place| place.key == key)?;
        if let Some(place) = self.places.get_mut(at) {
            place.waited = true;
        }
        if self.window_start_ms == 0 {
            self.window_start_ms = now_ms.max(1);
        }
        u32::try_from(at + 1).ok()
    }

    /// Removes `key`'s place `seq` (its holder was admitted); returns whether the
    /// holder had been told to wait (then it counts into the rate window).
    pub fn remove(&mut self, key: u64, seq: u64, now_ms: u64) -> bool {
        let Some(at) = self
            .places
            .iter()
            .position(|place| place.key == key && place.seq == seq)
        else {
            return false;
        };
        let waited = self.places.get(at).is_some_and(|place| place.waited);
        self.places.remove(at);
        if waited && self.window_start_ms != 0 {
            let span = now_ms.saturating_sub(self.window_start_ms);
            if span > RATE_WINDOW_MS {
                self.window_start_ms = now_ms.saturating_sub(span / 2).max(1);
                self.dequeued /= 2;
            }
            self.dequeued = self.dequeued.saturating_add(1);
        }
        self.reset_window_if_idle();
        waited
    }

    /// The estimated wait of `position` at `now_ms`, in whole seconds (rounded
    /// up); `None` before the first admission from the queue.
    pub fn eta_s(&self, position: u32, now_ms: u64) -> Option<u32> {
        if self.dequeued == 0 || self.window_start_ms == 0 {
            return None;
        }
        let span_ms = u128::from(now_ms.saturating_sub(self.window_start_ms));
        let total_ms = span_ms * u128::from(position) / u128::from(self.dequeued);
        Some(u32::try_from(total_ms.div_ceil(1000)).unwrap_or(u32::MAX))
    }

    /// Hunters waiting (told to wait, not admitted, not dropped).
    pub fn waiting(&self) -> u32 {
        let n = self.places.iter().filter(|place| place.waited).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// How long the longest-waiting hunter has waited, in ms (0 when none waits).
    pub fn oldest_wait_ms(&self, now_ms: u64) -> u64 {
        self.places
            .iter()
            .filter(|place| place.waited)
            .map(|place| now_ms.saturating_sub(place.issued_ms))
            .max()
            .unwrap_or(0)
    }
}
