//! A worker's view of the sessions this Envoy process ended, so that a ticket
//! issued for an ended session is refused on every worker at once.
//!
//! The lists live in shared data ([`crate::store`]: `ended/<k>`, `ended_gen`).
//! A request with a ticket reads only the CAS token of an empty signal value; the
//! generations are read when it changed, and a list when its generation moved
//! since this worker last read it.

use hashbrown::HashMap;

use crate::shared_data::{SharedData, StoreError};
use crate::store::{self, ENDED_SHARDS};

/// Ended sessions as one worker last read them.
#[derive(Debug)]
pub struct EndedView {
    /// Per list: the generation it was read at, and hunter key → ended at (ms).
    lists: Vec<(u32, HashMap<u64, u64>)>,
    /// The generations read by the last [`EndedView::refresh`] that saw a change.
    generations: Vec<u8>,
    /// The signal's CAS token when `generations` were read (0: never).
    signal: u32,
}

impl Default for EndedView {
    fn default() -> Self {
        Self {
            lists: (0..ENDED_SHARDS).map(|_| (0, HashMap::new())).collect(),
            generations: Vec::new(),
            signal: 0,
        }
    }
}

impl EndedView {
    /// Catches up with the ended sessions' generations (once per request, before
    /// [`EndedView::ended_ms`]): one read of the signal, and of the generations
    /// only when it changed.
    pub fn refresh<S: SharedData>(&mut self, shared: &S) -> Result<(), StoreError> {
        let signal = store::ended_signal(shared)?;
        if signal != self.signal || self.generations.is_empty() {
            // Read after the signal: an end between the two reads is seen again next time.
            self.generations = store::ended_generations(shared)?;
            self.signal = signal;
        }
        Ok(())
    }

    /// When `key`'s session was last ended in this process, if it is remembered
    /// (re-reading its list when it changed since the last read).
    pub fn ended_ms<S: SharedData>(
        &mut self,
        shared: &S,
        key: u64,
    ) -> Result<Option<u64>, StoreError> {
        let shard = store::ended_shard_of(key);
        let generation = store::ended_generation(&self.generations, shard);
        let Some((read_at, list)) = self.lists.get_mut(shard as usize) else {
            return Ok(None);
        };
        if *read_at != generation {
            let entries = store::ended_sessions(shared, shard)?;
            list.clear();
            for (entry_key, at) in entries {
                let known = list.entry(entry_key).or_insert(at);
                *known = (*known).max(at);
            }
            *read_at = generation;
        }
        Ok(list.get(&key).copied())
    }

    /// Whether a ticket of `key` issued at `issued_ms` belongs to an ended session.
    pub fn is_ended<S: SharedData>(
        &mut self,
        shared: &S,
        key: u64,
        issued_ms: u64,
    ) -> Result<bool, StoreError> {
        Ok(self
            .ended_ms(shared, key)?
            .is_some_and(|ended_ms| issued_ms <= ended_ms))
    }

    /// When `key`'s session ended, as this worker last read it (no shared-data read).
    pub fn known_ended_ms(&self, key: u64) -> Option<u64> {
        let shard = store::ended_shard_of(key) as usize;
        self.lists
            .get(shard)
            .and_then(|(_, list)| list.get(&key).copied())
    }
}
