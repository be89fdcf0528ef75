//! The spike demo: sample hunt service, load generator and report (issue 4).
