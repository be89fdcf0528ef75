//! Free loopback ports, from the one harness (`huntgate-harness`).

pub use huntgate_harness::ports::free_port;
