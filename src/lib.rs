//! huntgate: the Envoy HTTP filter (proxy-wasm, wasm32) that admits hunters into
//! hunts up to a live limit and never freezes a hunter it admitted.
//!
//! This crate is only the adapter: the logic lives in `huntgate-core`.

#[cfg(feature = "crash-test")]
mod crash_test;
mod exports;
mod host;
mod http_context;
mod metrics;
mod root_context;
