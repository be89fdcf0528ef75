//! Every call across the Wasm boundary of a real Envoy, read back from its log.
//!
//! With component `wasm` at level trace (admin `POST /logging?wasm=trace`, at run time,
//! so a prefill need not be traced) Envoy's Wasm runtime logs each crossing
//! (`source/extensions/common/wasm/wasm_vm.cc`): `[host->vm] proxy_on_request_headers(2, 9, 1)`
//! when Envoy calls into the module, `[vm->host] env.proxy_get_shared_data(…)` when the
//! module calls the host, and a `return` line closing each. While a host call returns
//! data, Envoy asks the module for the buffer (`[host->vm] proxy_on_memory_allocate(276)`),
//! so the bytes copied into the VM are the sizes it allocates. This module groups the
//! crossings by thread into the callbacks Envoy made, and a stream's callbacks into one
//! [`Tally`] per request: calls into the VM, host calls by name, bytes in and out, and the
//! shared-data reads and writes among them. Counted by Envoy itself, for any module,
//! without instrumenting it (the tests and the bench share this one reading).

use std::collections::BTreeMap;

/// The admin request (a POST) that starts the trace.
pub const TRACE_ON: &str = "/logging?wasm=trace";

/// The host allocating a buffer in the module for data it returns.
const ALLOCATE: &str = "proxy_on_memory_allocate";
const GET_SHARED_DATA: &str = "proxy_get_shared_data";
const SET_SHARED_DATA: &str = "proxy_set_shared_data";

/// One call the module made into the host, inside a callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCall {
    /// Its name without the `env.` module prefix, e.g. `proxy_get_shared_data`.
    pub name: String,
    /// Its arguments as logged (pointers and sizes).
    pub args: Vec<u64>,
    /// The buffers the host allocated in the module to return data (bytes each).
    pub allocated: Vec<u64>,
}

impl HostCall {
    /// Bytes the module passed to the host (keys, values, header names and values,
    /// bodies, log messages): the size arguments of the calls whose layout is known.
    pub fn bytes_out(&self) -> u64 {
        let sizes: &[usize] = match self.name.as_str() {
            "proxy_get_shared_data" | "proxy_get_property" => &[1],
            "proxy_set_shared_data" => &[1, 3],
            "proxy_get_header_map_value" | "proxy_remove_header_map_value" | "proxy_log" => &[2],
            "proxy_add_header_map_value" | "proxy_replace_header_map_value" => &[2, 4],
            "proxy_send_local_response" => &[2, 4, 6],
            "proxy_dispatch_http_call" => &[1, 3, 5, 7],
            _ => &[],
        };
        sizes.iter().filter_map(|&i| self.args.get(i)).sum::<u64>()
    }

    /// Bytes the host copied into the module for this call.
    pub fn bytes_in(&self) -> u64 {
        self.allocated.iter().sum()
    }
}

/// One call Envoy made into the module (an export other than the allocator), with
/// the host calls the module made before it returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback {
    /// Envoy's thread id (the second bracketed field of a log line).
    pub thread: String,
    /// The export, e.g. `proxy_on_request_headers`.
    pub name: String,
    /// Its arguments as logged (the first is the context id for stream callbacks).
    pub args: Vec<u64>,
    /// The host calls made inside it, in order.
    pub calls: Vec<HostCall>,
    /// Buffers the host allocated in the module outside any host call (e.g. for the
    /// plugin configuration it hands over with the callback).
    pub allocated: Vec<u64>,
}

/// A crossing as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Crossing {
    /// `[host->vm] name(args)`.
    IntoVm(String, Vec<u64>),
    /// `[host<-vm] name return: …`.
    OutOfVm(String),
    /// `[vm->host] env.name(args)`.
    ToHost(String, Vec<u64>),
    /// `[vm<-host] env.name return: …`.
    BackFromHost,
}

/// Reads one log line: its thread id and crossing, or `None` for any other line.
fn crossing(line: &str) -> Option<(&str, Crossing)> {
    let thread = line.split('[').nth(2)?.split(']').next()?;
    for (marker, kind) in [
        ("[host->vm] ", 0),
        ("[host<-vm] ", 1),
        ("[vm->host] ", 2),
        ("[vm<-host] ", 3),
    ] {
        let Some((_, rest)) = line.split_once(marker) else {
            continue;
        };
        let rest = rest.trim_end();
        let name_end = rest.find(['(', ' ']).unwrap_or(rest.len());
        let name = rest.get(..name_end)?;
        let name = name.strip_prefix("env.").unwrap_or(name).to_string();
        let args = || -> Vec<u64> {
            rest.get(name_end..)
                .and_then(|a| a.strip_prefix('('))
                .and_then(|a| a.strip_suffix(')'))
                // A value that is not a u64 (none of the calls counted here
                // logs one) reads as 0, so the positions of the others hold.
                .map(|a| {
                    a.split(',')
                        .map(|n| n.trim().parse().unwrap_or(0))
                        .collect()
                })
                .unwrap_or_default()
        };
        let parsed = match kind {
            0 => Crossing::IntoVm(name, args()),
            1 => Crossing::OutOfVm(name),
            2 => Crossing::ToHost(name, args()),
            _ => Crossing::BackFromHost,
        };
        return Some((thread, parsed));
    }
    None
}

/// One thread's crossings so far: the callback it is in, and the host call.
#[derive(Default)]
struct Open {
    callback: Option<Callback>,
    host_call: Option<HostCall>,
}

impl Open {
    /// Files the open host call (returned, or never returned) under the callback.
    fn end_host_call(&mut self) {
        if let (Some(call), Some(callback)) = (self.host_call.take(), self.callback.as_mut()) {
            callback.calls.push(call);
        }
    }

    /// Ends the open callback (returned, or never returned: a trap), with its calls.
    fn end_callback(&mut self) -> Option<Callback> {
        self.end_host_call();
        self.host_call = None;
        self.callback.take()
    }
}

/// The callbacks of `log` (Envoy's log text), in the order they returned. A
/// callback that never returned (a trap) is kept, ending where the thread's next
/// callback starts; one still open at the end of the text is left out.
pub fn callbacks(log: &str) -> Vec<Callback> {
    let mut open: BTreeMap<String, Open> = BTreeMap::new();
    let mut done = Vec::new();
    for (thread, crossing) in log.lines().filter_map(crossing) {
        let state = open.entry(thread.to_string()).or_default();
        match crossing {
            Crossing::IntoVm(name, args) if name == ALLOCATE => {
                let size = args.first().copied().unwrap_or(0);
                match (&mut state.host_call, &mut state.callback) {
                    (Some(call), _) => call.allocated.push(size),
                    (None, Some(callback)) => callback.allocated.push(size),
                    (None, None) => {}
                }
            }
            Crossing::IntoVm(name, args) => {
                // A callback that never returned (the module trapped) is kept,
                // with what it did until then.
                done.extend(state.end_callback());
                state.callback = Some(Callback {
                    thread: thread.to_string(),
                    name,
                    args,
                    calls: Vec::new(),
                    allocated: Vec::new(),
                });
            }
            Crossing::OutOfVm(name) if name == ALLOCATE => {}
            Crossing::OutOfVm(_) => done.extend(state.end_callback()),
            Crossing::ToHost(name, args) => {
                state.end_host_call();
                state.host_call = Some(HostCall {
                    name,
                    args,
                    allocated: Vec::new(),
                });
            }
            Crossing::BackFromHost => state.end_host_call(),
        }
    }
    done
}

/// What one request cost at the boundary: the sum over its stream's callbacks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Calls Envoy made into the module for the stream (context create, request and
    /// response headers, delete…), the allocator's not included.
    pub into_vm: u64,
    /// Buffers the host allocated in the module (one per host call returning data).
    pub allocations: u64,
    /// Host calls by name.
    pub host_calls: BTreeMap<String, u64>,
    /// Bytes copied into the module.
    pub bytes_in: u64,
    /// Bytes the module passed out (see [`HostCall::bytes_out`]).
    pub bytes_out: u64,
    /// Shared-data reads (`proxy_get_shared_data`), found or not.
    pub shared_reads: u64,
    /// Shared-data writes (`proxy_set_shared_data`), CAS mismatches included.
    pub shared_writes: u64,
    /// Shared-data value bytes copied into the module by the reads.
    pub shared_bytes_in: u64,
    /// Shared-data value bytes the writes passed out.
    pub shared_bytes_out: u64,
    /// Whether Envoy deleted the stream's context (its tally is complete).
    pub closed: bool,
}

impl Tally {
    /// Every host call.
    pub fn host_calls_total(&self) -> u64 {
        self.host_calls.values().sum()
    }

    fn add(&mut self, callback: &Callback) {
        self.into_vm += 1;
        self.closed |= callback.name == "proxy_on_delete";
        self.allocations += callback.allocated.len() as u64;
        self.bytes_in += callback.allocated.iter().sum::<u64>();
        for call in &callback.calls {
            *self.host_calls.entry(call.name.clone()).or_default() += 1;
            self.allocations += call.allocated.len() as u64;
            self.bytes_in += call.bytes_in();
            self.bytes_out += call.bytes_out();
            if call.name == GET_SHARED_DATA {
                self.shared_reads += 1;
                self.shared_bytes_in += call.bytes_in();
            } else if call.name == SET_SHARED_DATA {
                self.shared_writes += 1;
                self.shared_bytes_out += call.args.get(3).copied().unwrap_or(0);
            }
        }
    }
}

/// One HTTP stream's tally per request, in the order the streams were created:
/// the callbacks whose first argument is a context created under a root context
/// (`proxy_on_context_create(id, parent)` with `parent` ≠ 0). Root callbacks (ticks,
/// configuration, HTTP-call answers) are left out.
pub fn per_stream(callbacks: &[Callback]) -> Vec<(u64, Tally)> {
    let mut order: Vec<(String, u64)> = Vec::new();
    let mut tallies: BTreeMap<(String, u64), Tally> = BTreeMap::new();
    for callback in callbacks {
        let Some(&context) = callback.args.first() else {
            continue;
        };
        let key = (callback.thread.clone(), context);
        let is_stream_creation = callback.name == "proxy_on_context_create"
            && callback.args.get(1).is_some_and(|&parent| parent != 0);
        if is_stream_creation {
            order.push(key.clone());
            tallies.insert(key.clone(), Tally::default());
        }
        if let Some(tally) = tallies.get_mut(&key) {
            tally.add(callback);
        }
    }
    order
        .into_iter()
        .filter_map(|key| tallies.remove(&key).map(|tally| (key.1, tally)))
        .collect()
}

/// The per-request tallies of the streams Envoy created after byte `offset` of its
/// log file at `log` (where the log stood when the trace was turned on), in order.
pub fn tallies_since(log: &std::path::Path, offset: u64) -> std::io::Result<Vec<Tally>> {
    let bytes = std::fs::read(log)?;
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    let text = String::from_utf8_lossy(bytes.get(start..).unwrap_or_default());
    Ok(per_stream(&callbacks(&text))
        .into_iter()
        .map(|(_, tally)| tally)
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)]

    use super::*;

    fn line(thread: u32, text: &str) -> String {
        format!(
            "[2026-12-07 20:26:36.888][{thread}][trace][wasm] [source/extensions/common/wasm/wasm_vm.cc:39] {text}\n"
        )
    }

    /// A join as Envoy 1.40 logged it (abridged), with a tick of another thread
    /// and the filter's own log line in between.
    fn join_log() -> String {
        [
            line(7, "[host->vm] proxy_on_context_create(2, 1)"),
            line(7, "[host<-vm] proxy_on_context_create return: void"),
            line(7, "[host->vm] proxy_on_request_headers(2, 9, 1)"),
            line(
                7,
                "[vm->host] env.proxy_get_header_map_pairs(0, 1048184, 1048188)",
            ),
            line(7, "[host->vm] proxy_on_memory_allocate(276)"),
            line(7, "[host<-vm] proxy_on_memory_allocate return: 1090000"),
            line(7, "[vm<-host] env.proxy_get_header_map_pairs return: 0"),
            line(8, "[host->vm] proxy_on_tick(1)"),
            line(
                8,
                "[vm->host] env.proxy_get_shared_data(1055559, 20, 1, 2, 3)",
            ),
            line(
                7,
                "[vm->host] env.proxy_get_shared_data(1055559, 20, 1046688, 1046692, 1046696)",
            ),
            line(7, "[host->vm] proxy_on_memory_allocate(20)"),
            line(7, "[host<-vm] proxy_on_memory_allocate return: 1090400"),
            line(7, "[vm<-host] env.proxy_get_shared_data return: 0"),
            "[2026-12-07 20:26:36.888][7][info][wasm] wasm log huntgate: hello\n".to_string(),
            line(8, "[vm<-host] env.proxy_get_shared_data return: 1"),
            line(8, "[host<-vm] proxy_on_tick return: void"),
            line(
                7,
                "[vm->host] env.proxy_set_shared_data(1055559, 20, 1083120, 20, 1045)",
            ),
            line(7, "[vm<-host] env.proxy_set_shared_data return: 0"),
            line(
                7,
                "[vm->host] env.proxy_replace_header_map_value(0, 1077822, 19, 1074920, 8)",
            ),
            line(7, "[vm<-host] env.proxy_replace_header_map_value return: 0"),
            line(7, "[host<-vm] proxy_on_request_headers return: 0"),
            line(7, "[host->vm] proxy_on_response_headers(2, 3, 0)"),
            line(
                7,
                "[vm->host] env.proxy_add_header_map_value(2, 1076119, 10, 1086656, 114)",
            ),
            line(7, "[vm<-host] env.proxy_add_header_map_value return: 0"),
            line(7, "[host<-vm] proxy_on_response_headers return: 0"),
            line(7, "[host->vm] proxy_on_delete(2)"),
            line(7, "[host<-vm] proxy_on_delete return: void"),
        ]
        .concat()
    }

    #[test]
    fn a_streams_callbacks_add_up_to_its_tally_and_other_threads_stay_apart() {
        let callbacks = callbacks(&join_log());
        let names: Vec<&str> = callbacks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "proxy_on_context_create",
                "proxy_on_tick",
                "proxy_on_request_headers",
                "proxy_on_response_headers",
                "proxy_on_delete"
            ]
        );
        let streams = per_stream(&callbacks);
        assert_eq!(streams.len(), 1, "the tick is a root callback");
        let (context, tally) = &streams[0];
        assert_eq!(*context, 2);
        assert!(tally.closed);
        assert_eq!(tally.into_vm, 4);
        assert_eq!(tally.allocations, 2);
        assert_eq!(tally.host_calls_total(), 5);
        assert_eq!(tally.host_calls.get(GET_SHARED_DATA), Some(&1));
        assert_eq!(tally.bytes_in, 276 + 20);
        // Key 20 (read) + key 20 and value 20 (write) + 19 + 8 + 10 + 114 (headers).
        assert_eq!(tally.bytes_out, 20 + 20 + 20 + 19 + 8 + 10 + 114);
        assert_eq!((tally.shared_reads, tally.shared_writes), (1, 1));
        assert_eq!((tally.shared_bytes_in, tally.shared_bytes_out), (20, 20));
    }

    #[test]
    fn a_read_of_an_empty_value_copies_nothing_in() {
        let log = [
            line(3, "[host->vm] proxy_on_context_create(5, 1)"),
            line(3, "[host<-vm] proxy_on_context_create return: void"),
            line(3, "[host->vm] proxy_on_request_headers(5, 4, 1)"),
            line(3, "[vm->host] env.proxy_get_shared_data(1, 24, 2, 3, 4)"),
            line(3, "[vm<-host] env.proxy_get_shared_data return: 0"),
            line(3, "[host<-vm] proxy_on_request_headers return: 0"),
        ]
        .concat();
        let streams = per_stream(&callbacks(&log));
        let tally = &streams[0].1;
        assert_eq!((tally.shared_reads, tally.shared_bytes_in), (1, 0));
        assert_eq!(tally.allocations, 0);
        assert!(!tally.closed, "no proxy_on_delete yet");
    }

    #[test]
    fn a_callback_that_never_returned_is_kept_with_its_host_calls() {
        let log = [
            line(3, "[host->vm] proxy_on_request_headers(5, 4, 1)"),
            line(3, "[vm->host] env.proxy_get_header_map_pairs(0, 1, 2)"),
            // The module trapped: no return lines; Envoy goes on with the stream.
            line(3, "[host->vm] proxy_on_delete(5)"),
            line(3, "[host<-vm] proxy_on_delete return: void"),
        ]
        .concat();
        let callbacks = callbacks(&log);
        assert_eq!(callbacks.len(), 2);
        assert_eq!(callbacks[0].name, "proxy_on_request_headers");
        assert_eq!(callbacks[0].calls.len(), 1);
    }

    #[test]
    fn other_lines_and_an_unfinished_callback_are_left_out() {
        let log = [
            "[2026-12-07 20:26:32.008][1][info][main] initializing epoch 0\n".to_string(),
            line(3, "[host->vm] proxy_on_request_headers(5, 4, 1)"),
        ]
        .concat();
        assert!(callbacks(&log).is_empty());
    }
}
