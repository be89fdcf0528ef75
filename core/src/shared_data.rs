//! The host's shared key-value store as the core sees it: Envoy's proxy-wasm
//! shared data (one map per process and `vm_id`, compare-and-swap on write).

use std::fmt;

/// What a conditional write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOutcome {
    /// The value was stored.
    Written,
    /// Someone wrote the key since it was read; nothing was stored.
    CasMismatch,
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The host refused a call (the message says which and why).
    Host(String),
    /// A key that should have been created at configure time is missing.
    MissingKey(String),
    /// Compare-and-swap kept failing on this key.
    Contention(String),
    /// The hunt's slot was given to another hunt (this worker's registry view is stale).
    SlotMoved(String),
    /// A bounded structure in shared data is full (the message says which).
    Full(String),
    /// `seats` counted in slot `slot` (owner tag `tag`) hold no session any more (a join
    /// whose record could not be written, records the sweeper removed) and giving them
    /// back failed too (`cause`): the caller must give them back later
    /// (`store::give_back`), or the hunt loses them for the life of the process.
    Unreleased {
        /// The slot index.
        slot: u32,
        /// Its owner tag when the seats were taken.
        tag: u64,
        /// How many seats.
        seats: u32,
        /// Why giving them back failed.
        cause: String,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Host(msg) => write!(f, "host call failed: {msg}"),
            StoreError::MissingKey(key) => write!(f, "shared data key `{key}` is missing"),
            StoreError::Contention(key) => write!(f, "too much contention on `{key}`"),
            StoreError::SlotMoved(key) => write!(f, "`{key}` now belongs to another hunt"),
            StoreError::Full(what) => write!(f, "{what} is full"),
            StoreError::Unreleased {
                slot, seats, cause, ..
            } => write!(
                f,
                "{seats} seat(s) of slot {slot} could not be given back yet ({cause}); retried at the next tick"
            ),
        }
    }
}

impl std::error::Error for StoreError {}

/// Envoy shared data semantics: `get` returns the value and its CAS token;
/// `set` with `cas == 0` always writes, otherwise only if the token still matches.
/// (Envoy does not check the token when the key does not exist yet.)
pub trait SharedData {
    /// Value and CAS token of `key`, or `None` if it was never written.
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError>;
    /// Writes `value` if `cas` is 0 or matches the key's current token.
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<SetOutcome, StoreError>;
}

/// An in-process implementation with Envoy's semantics, for tests and benchmarks of the core.
#[derive(Debug, Default)]
pub struct MemorySharedData {
    inner: std::sync::Mutex<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    map: hashbrown::HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
}

impl MemorySharedData {
    /// Total bytes of all values (for footprint measurements).
    pub fn value_bytes(&self) -> usize {
        self.inner
            .lock()
            .map(|inner| inner.map.values().map(|(v, _)| v.len()).sum())
            .unwrap_or(0)
    }

    /// Number of keys.
    pub fn key_count(&self) -> usize {
        self.inner.lock().map(|inner| inner.map.len()).unwrap_or(0)
    }
}

impl SharedData for MemorySharedData {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        let inner = self
            .inner
            .lock()
            .map_err(|_| StoreError::Host("poisoned".to_string()))?;
        Ok(inner.map.get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<SetOutcome, StoreError> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| StoreError::Host("poisoned".to_string()))?;
        if let Some((_, current)) = inner.map.get(key) {
            if cas != 0 && cas != *current {
                return Ok(SetOutcome::CasMismatch);
            }
        }
        inner.next_cas = inner.next_cas.wrapping_add(1).max(1);
        let token = inner.next_cas;
        inner.map.insert(key.to_string(), (value.to_vec(), token));
        Ok(SetOutcome::Written)
    }
}
