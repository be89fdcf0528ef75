//! When the sweeper reads each tracked hunt's count (issue 12). A slot is read
//! again when its earliest session can expire, and at the latest one session TTL
//! after the last read (a session that starts after that read expires no
//! earlier, see [`crate::ticket::session_expiry_s`]). So a tick costs work in
//! proportion to the slots due, not to the hunts tracked: with 10,000 tracked
//! hunts and nothing expiring, a tick reads the counts of about
//! `10,000 / session_ttl_s` hunts instead of all 10,000.
//!
//! What this relies on: a record's expiry only ever moves later (joins and
//! renewals write `now + session_ttl_s`, extensions keep the later expiry), and
//! the count's `next_expiry_s` is a lower bound of its records' expiries. A VM
//! with a shorter `session_ttl_s` in the same process (a configuration roll-out)
//! can make a session expire up to the difference earlier than scheduled here;
//! it is then swept that much later, never counted wrongly.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::store::{SlotRef, Swept};

/// When a slot read at `now_ms`, found as `swept`, needs its next read (ms).
pub fn next_read_ms(now_ms: u64, ttl_s: u32, swept: &Swept) -> u64 {
    let latest = now_ms.saturating_add(u64::from(ttl_s) * 1000);
    if swept.active == 0 {
        return latest;
    }
    match swept.next_expiry_s {
        // Seats whose records were not written yet: read again at the next tick.
        None => now_ms,
        Some(expiry_s) => (u64::from(expiry_s) * 1000).min(latest),
    }
}

/// The sweeper's schedule: per tracked slot, when its count needs reading.
/// Memory: one entry per tracked slot, plus at most one superseded heap entry per
/// slot until it surfaces (the heap is rebuilt whenever the registry changes).
#[derive(Debug, Default)]
pub struct SweepSchedule {
    /// (due ms, slot, tag), earliest first; an entry that no longer matches
    /// `due` was superseded and is skipped.
    queue: BinaryHeap<Reverse<(u64, u32, u64)>>,
    /// Slot → (owner tag, due ms) of its current entry.
    due: hashbrown::HashMap<u32, (u64, u64)>,
    /// The registry generation the slots were taken from.
    generation: Option<u64>,
    /// The `session_ttl_s` the due times were computed with.
    ttl_s: u32,
    /// Shards per slot of the slots synced (one value per process).
    shards: u32,
}

impl SweepSchedule {
    /// Forgets every slot: each is due at the next [`SweepSchedule::sync`].
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Slots in the schedule.
    pub fn len(&self) -> usize {
        self.due.len()
    }

    /// Whether no slot is scheduled.
    pub fn is_empty(&self) -> bool {
        self.due.is_empty()
    }

    /// Follows the registry: when its `generation` moved (or `ttl_s` changed, which
    /// starts over), slots new or given to another hunt are due at `now_ms` and
    /// slots that are no hunt's any more are dropped. Otherwise does nothing, so
    /// `slots` is only walked when the registry changed.
    pub fn sync<I>(&mut self, generation: u64, ttl_s: u32, slots: I, now_ms: u64)
    where
        I: IntoIterator<Item = SlotRef>,
    {
        if ttl_s != self.ttl_s {
            self.reset();
            self.ttl_s = ttl_s;
        }
        if self.generation == Some(generation) {
            return;
        }
        self.generation = Some(generation);
        let previous = std::mem::take(&mut self.due);
        for slot in slots {
            self.shards = slot.shards;
            let due_ms = match previous.get(&slot.slot) {
                Some((tag, due_ms)) if *tag == slot.tag => *due_ms,
                _ => now_ms,
            };
            self.due.insert(slot.slot, (slot.tag, due_ms));
        }
        self.queue = self
            .due
            .iter()
            .map(|(slot, (tag, due_ms))| Reverse((*due_ms, *slot, *tag)))
            .collect();
    }

    /// The slots due at `now_ms`, earliest first. Each stays scheduled at its due
    /// time until [`SweepSchedule::read`] reports it read.
    pub fn take_due(&mut self, now_ms: u64) -> Vec<SlotRef> {
        let mut taken = Vec::new();
        while let Some(Reverse((due_ms, slot, tag))) = self.queue.peek().copied() {
            if due_ms > now_ms {
                break;
            }
            self.queue.pop();
            if self.due.get(&slot) == Some(&(tag, due_ms)) {
                taken.push(SlotRef {
                    slot,
                    tag,
                    shards: self.shards,
                });
            }
        }
        // Until read, each is due again at once (a tick that stops early keeps them).
        for slot in &taken {
            self.queue.push(Reverse((now_ms, slot.slot, slot.tag)));
            self.due.insert(slot.slot, (slot.tag, now_ms));
        }
        taken
    }

    /// Records that `slot` was read at `now_ms` and found as `swept`.
    pub fn read(&mut self, slot: SlotRef, now_ms: u64, swept: &Swept) {
        if self
            .due
            .get(&slot.slot)
            .is_none_or(|(tag, _)| *tag != slot.tag)
        {
            return;
        }
        // Due at this tick's time again only if unknown: strictly later otherwise.
        let due_ms = next_read_ms(now_ms, self.ttl_s, swept);
        let due_ms = if due_ms <= now_ms {
            now_ms.saturating_add(1)
        } else {
            due_ms
        };
        self.due.insert(slot.slot, (slot.tag, due_ms));
        self.queue.push(Reverse((due_ms, slot.slot, slot.tag)));
    }
}
