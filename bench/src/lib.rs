//! The benchmark harness (issue 5).
