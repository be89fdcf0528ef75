//! huntgate-governor: turns backend pressure (Redis memory, Kafka consumer lag) into
//! per-hunt throttle ratios and serves them to the huntgate Envoy filter.
//!
//! Pure core, thin adapters:
//! - [`law`]: the control law, a pure function of (state, policy, signals, now);
//! - [`signal`]: signal names and health (pure bookkeeping);
//! - [`policy`]: YAML policies → validated, immutable [`policy::Policy`]; live reload;
//! - [`document`]: the throttle document and its versioning;
//! - [`governor`]: the state machine tying them together, driven at injected times;
//! - [`sources`]: the Redis and Kafka readers (the only I/O besides HTTP);
//! - [`api`] and [`metrics`]: the HTTP surface; [`serve`]: the running service;
//! - [`persist`]: the law's state across restarts (pure resume rule + a file store);
//! - [`listener`]: connection cap, header/idle timeouts and the drain kill switch;
//! - [`text`]: redaction and truncation of everything echoed in errors and logs;
//! - [`legacy`]: `import-legacy` for hunt-config.yml;
//! - [`operator`]: live overrides, started and ended hunts set through the gRPC API
//!   (pure), and where they are kept;
//! - [`grpc`]: the gRPC API for the orchestrator and `huntgatectl` ([`ctl`] renders its
//!   output);
//! - [`manifests`]: `check-manifests`, the install guard over rendered Kubernetes manifests.

#![warn(missing_docs)]

#[cfg(feature = "runtime")]
pub mod api;
pub mod clock;
#[cfg(feature = "runtime")]
pub mod coordination;
#[cfg(feature = "runtime")]
pub mod ctl;
pub mod document;
#[cfg(feature = "runtime")]
pub mod fleet;
#[cfg(feature = "runtime")]
pub mod governor;
#[cfg(feature = "runtime")]
pub mod grpc;
pub mod law;
#[cfg(feature = "runtime")]
pub mod legacy;
#[cfg(feature = "runtime")]
pub mod listener;
#[cfg(feature = "runtime")]
pub mod manifests;
#[cfg(feature = "runtime")]
pub mod metrics;
#[cfg(feature = "runtime")]
pub mod operator;
#[cfg(feature = "runtime")]
pub mod persist;
pub mod policy;
#[cfg(feature = "runtime")]
pub mod serve;
pub mod signal;
#[cfg(feature = "runtime")]
pub mod sources;
pub mod text;
