// Shared data that counts the host calls made on it and the bytes they copy: what
// a join or a sweeper tick costs. Included with `#[path]` by the store and engine
// tests.
#![allow(dead_code)]

use std::cell::Cell;

use huntgate_core::shared_data::{MemorySharedData, SetOutcome, SharedData, StoreError};

pub struct Counted<'a> {
    inner: &'a MemorySharedData,
    gets: Cell<u32>,
    sets: Cell<u32>,
    bytes: Cell<usize>,
}

impl<'a> Counted<'a> {
    /// Counts the calls made on `inner` from now on.
    pub fn new(inner: &'a MemorySharedData) -> Self {
        Self {
            inner,
            gets: Cell::new(0),
            sets: Cell::new(0),
            bytes: Cell::new(0),
        }
    }

    /// (gets, sets, bytes copied) since the last call.
    pub fn take(&self) -> (u32, u32, usize) {
        (self.gets.take(), self.sets.take(), self.bytes.take())
    }
}

impl SharedData for Counted<'_> {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        self.gets.set(self.gets.get() + 1);
        let value = self.inner.get(key)?;
        let len = value.as_ref().map_or(0, |(v, _)| v.len());
        self.bytes.set(self.bytes.get() + len);
        Ok(value)
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<SetOutcome, StoreError> {
        self.sets.set(self.sets.get() + 1);
        self.bytes.set(self.bytes.get() + value.len());
        self.inner.set(key, value, cas)
    }
}
