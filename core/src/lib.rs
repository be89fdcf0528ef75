//! huntgate-core: the admission logic of the huntgate Envoy filter, free of any
//! proxy-wasm dependency so it runs and is tested natively and on wasm32.
//!
//! - [`config`]: the plugin configuration schema, validation and compiled form
//!   ([`config_read`] reads its JSON, with [`json`], the filter's JSON reader and writer);
//! - [`path`]: which hunt a path names, read every way an upstream might;
//! - [`request`]: request → (hunt, hunter, tickets);
//! - [`ticket`]: HMAC-signed admission tickets;
//! - [`ticket_cache`]: a worker's cache of verified tickets (the hot path);
//! - [`store`]: the exact, CAS-based session count in Envoy shared data;
//! - [`sweep_schedule`]: when the sweeper reads each tracked hunt's count;
//! - [`ended`]: a worker's view of the sessions its process ended;
//! - [`throttle`]: governor ratios, lease shares and the enforced limit;
//! - [`lease`]: the lease exchange's report to the governor;
//! - [`engine`]: one worker's request handling and tick;
//! - [`waiting_room`]: a full hunt's FIFO queue (places, positions, estimated waits);
//! - [`reply`]: JSON error replies and the waiting page;
//! - [`decimal`] and [`sort`]: number reading and sorting, small in the module.
//!
//! `#[inline(never)]` marks the large functions off the hot path (configuration,
//! the tick, the governor's answer, the join's store calls): Envoy's V8 compiles
//! every function of the module with TurboFan when it loads it, the compilation's
//! memory grows with the function, and Envoy's allocator keeps that peak as RSS.
//! Kept apart, no function of `dist/huntgate.wasm` exceeds 8 KiB (bench-smoke
//! gates it; README, "Memory").

pub mod abi;
pub mod config;
pub mod config_read;
pub mod decimal;
pub mod ended;
pub mod engine;
pub mod fetcher;
pub mod hunt_id;
pub mod json;
pub mod lease;
pub mod path;
pub mod reply;
pub mod request;
pub mod shared_data;
pub mod sort;
pub mod store;
pub mod sweep_schedule;
pub mod throttle;
pub mod ticket;
pub mod ticket_cache;
pub mod waiting_room;
