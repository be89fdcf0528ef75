//! huntgate demo: replays the Hunt-001 spike three ways — the legacy fixed cap, no admission
//! control, huntgate with the governor — against real Envoy, Redis, a Kafka-protocol broker
//! and a sample hunt service, and writes a report with plots (see demo/README.md).
//!
//! One file, one role: [`service`] (the hunt API), [`loadgen`] (the hunters), [`ramp`] (the
//! spike's schedule), [`legacy`] (the `hunt-config.yml` cap), [`stats`] and [`report`] (pure
//! accounting and rendering), [`plot`], [`procs`] and [`stack`] (processes), [`orchestrate`].

pub mod http;
pub mod legacy;
pub mod loadgen;
pub mod orchestrate;
pub mod plot;
pub mod procs;
pub mod ramp;
pub mod report;
pub mod scenario;
pub mod service;
pub mod stack;
pub mod stats;
pub mod template;
