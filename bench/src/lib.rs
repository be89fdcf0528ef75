//! The benchmark harness (issue 5): what the huntgate filter costs per request,
//! how fast a governor decision lands, and its footprint. `make bench` runs it
//! all; `make bench-smoke` runs the instruction-count gate on a tiny setting.

pub mod burst;
pub mod control;
pub mod crossings;
pub mod envoy;
pub mod filters;
pub mod fleet;
pub mod flood;
pub mod footprint;
pub mod http;
pub mod instr;
pub mod leases;
pub mod load;
pub mod pollers;
pub mod process;
pub mod report;
pub mod workload;
