//! The child-process guard of the one harness (`huntgate-harness`).

pub use huntgate_harness::process::{ChildGuard, TERM_GRACE};
