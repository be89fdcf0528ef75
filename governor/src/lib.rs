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
//! - [`manifests`]: `check-manifests`, the install guard over rendered Kubernetes manifests.

#![warn(missing_docs)]

pub mod api;
pub mod clock;
pub mod coordination;
pub mod document;
pub mod fleet;
pub mod governor;
pub mod law;
pub mod legacy;
pub mod listener;
pub mod manifests;
pub mod metrics;
pub mod persist;
pub mod policy;
pub mod serve;
pub mod signal;
pub mod sources;
pub mod text;
