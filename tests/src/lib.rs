//! End-to-end harness for huntgate: runs the compiled filter
//! (`dist/huntgate.wasm`, or `$HUNTGATE_WASM`) inside a real Envoy
//! (`$HUNTGATE_ENVOY`, or `envoy` on `PATH`) in front of an echo upstream,
//! and talks to both over 127.0.0.1 only.
//!
//! One role per module: [`process`] stops child processes, [`ports`] picks
//! ports, [`envoy`] starts and reconfigures Envoy, [`upstream`] is the echo
//! server, [`http`] the client, [`metrics`] reads Prometheus output,
//! [`plugin`] builds plugin configurations, [`poll`] waits with a bound,
//! [`governor`] runs a real governor over a policy directory,
//! [`fault_governor`] a stand-in that misbehaves on demand, [`redis`] a
//! real redis-server, [`openapi`]
//! checks Kubernetes resources against their CRD schema.

pub mod envoy;
pub mod fault_governor;
pub mod governor;
pub mod http;
pub mod locate;
pub mod metrics;
pub mod openapi;
pub mod plugin;
pub mod poll;
pub mod ports;
pub mod process;
pub mod redis;
pub mod template;
pub mod upstream;

pub use envoy::{skip_route, Envoy, Exited, PathHandling, Reload};
pub use governor::{Governor, Policies};
pub use http::{h2_get, h2_get_bytes, raw_get, raw_request, Client, Connection, Response};
pub use metrics::Metrics;
pub use redis::Redis;
pub use upstream::Upstream;
