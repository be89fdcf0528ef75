//! huntgate's one test harness, used by the end-to-end tests (`tests/`), the governor's
//! integration tests, the benchmark (`bench/`) and the demo (`demo/`), so that each of
//! these facts has one implementation:
//! - [`process`]: a child process that is always stopped (SIGTERM, then SIGKILL after a
//!   grace period; also on drop, so a test that fails half-way leaves nothing running);
//! - [`ports`]: free loopback ports, picked below the ephemeral range and never handed out
//!   twice by one process (so a port cannot be taken between picking it and a server
//!   binding it by this process's own client connections);
//! - [`http1`]: reading one HTTP/1.1 response (chunked, Content-Length or to the end), and
//!   one bounded GET for readiness probes;
//! - [`tools`]: finding an executable from an environment override, the tool cache or `PATH`;
//! - [`redis`]: a real `redis-server` on a loopback port;
//! - [`tansu`]: a real tansu Kafka broker on a loopback port, killed and restarted at will;
//! - [`envoy`]: the Envoy binary, its command line, and readiness;
//! - [`governor`]: the governor binary, its policy directory, `serve`, and readiness;
//! - [`wasm_trace`]: every call across the Wasm boundary, read from Envoy's `wasm:trace`
//!   log: calls into the module, host calls and bytes per request.
//!
//! Dev only: no product binary depends on it.

// A harness that cannot do its job (no free port) fails the test or run it serves, loudly.
#![allow(clippy::panic)]

pub mod envoy;
pub mod governor;
pub mod http1;
pub mod ports;
pub mod process;
pub mod redis;
pub mod tansu;
pub mod tools;
pub mod wasm_trace;
