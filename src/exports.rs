//! The functions Envoy calls into this module (the proxy-wasm ABI 0.2.1 exports),
//! and the contexts they reach.
//!
//! Bound here directly instead of through the proxy-wasm SDK's dispatcher, because
//! every export is a call from Envoy into V8 that each request pays for whether or
//! not the filter has work to do there. This module exports only what huntgate uses:
//! no `proxy_on_log`, `proxy_on_done`, body, trailer or metadata callbacks, so
//! Envoy skips them (the host treats a missing export as "nothing to do"). A request
//! costs four calls into the VM — context create, request headers, response headers,
//! delete — plus one per host call that returns data (Envoy allocates the buffer
//! through `proxy_on_memory_allocate`). Contexts are found by id in hash maps keyed
//! with a cheap hasher; nothing here panics: an unknown context id, or a callback
//! that arrives while another holds the state, does nothing (and lets the request
//! through).

use std::cell::RefCell;
use std::mem::MaybeUninit;

use hashbrown::HashMap;

use crate::host;
use crate::http_context::HuntgateHttp;
use crate::root_context::HuntgateRoot;

/// What a request or response callback tells Envoy (proxy-wasm ABI `Action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Action {
    /// Go on to the next filter.
    Continue = 0,
    /// Stop here (a local reply was sent).
    Pause = 1,
}

/// Every context of this VM (one VM per Envoy worker thread, plus the main thread's).
#[derive(Default)]
struct Contexts {
    /// Root contexts by id: one per plugin configuration.
    roots: HashMap<u32, HuntgateRoot>,
    /// HTTP streams by id, each created under a configured root.
    streams: HashMap<u32, HuntgateHttp>,
}

thread_local! {
    static CONTEXTS: RefCell<Contexts> = RefCell::new(Contexts::default());
}

/// Runs `f` on the contexts, or returns `otherwise` if they are in use (a callback
/// arriving inside another: Envoy defers those, so this is only a guard).
fn with_contexts<T>(otherwise: T, f: impl FnOnce(&mut Contexts) -> T) -> T {
    CONTEXTS.with(|contexts| match contexts.try_borrow_mut() {
        Ok(mut contexts) => f(&mut contexts),
        Err(_) => otherwise,
    })
}

extern "C" {
    fn __wasm_call_ctors();
}

/// WASI reactor start: runs static constructors and routes panics to Envoy's log.
#[no_mangle]
pub extern "C" fn _initialize() {
    // SAFETY: the linker's constructor list, run once before any other export.
    unsafe { __wasm_call_ctors() };
    std::panic::set_hook(Box::new(|info| {
        host::log(host::Level::Error, &format!("panic: {info}"));
    }));
}

/// The ABI version this module speaks.
#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// Memory for a buffer the host hands over (header maps, shared data, config);
/// the adapter takes ownership of it as a `Vec<u8>` of exactly `size` bytes.
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let buffer: Box<[MaybeUninit<u8>]> = Box::new_uninit_slice(size);
    Box::into_raw(buffer).cast::<u8>()
}

/// A new context: a root (no parent) or an HTTP stream under root `parent_id`.
#[no_mangle]
pub extern "C" fn proxy_on_context_create(context_id: u32, parent_id: u32) {
    with_contexts((), |contexts| {
        if parent_id == 0 {
            contexts
                .roots
                .insert(context_id, HuntgateRoot::new(context_id));
        } else if let Some(stream) = contexts
            .roots
            .get(&parent_id)
            .and_then(HuntgateRoot::create_http_context)
        {
            contexts.streams.insert(context_id, stream);
        }
    });
}

/// The VM started; nothing to do before the plugin configuration arrives.
#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_root_id: u32, _vm_configuration_size: usize) -> bool {
    true
}

/// The plugin configuration of root `root_id` arrived (at start and on every change).
#[no_mangle]
pub extern "C" fn proxy_on_configure(root_id: u32, _plugin_configuration_size: usize) -> bool {
    with_contexts(false, |contexts| {
        contexts
            .roots
            .get_mut(&root_id)
            .is_some_and(HuntgateRoot::on_configure)
    })
}

/// The periodic tick of root `root_id`.
#[no_mangle]
pub extern "C" fn proxy_on_tick(root_id: u32) {
    with_contexts((), |contexts| {
        if let Some(root) = contexts.roots.get_mut(&root_id) {
            root.on_tick();
        }
    });
}

/// The answer (or failure) of an HTTP call that root `root_id` dispatched.
#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(
    root_id: u32,
    token: u32,
    _num_headers: usize,
    body_size: usize,
    _num_trailers: usize,
) {
    with_contexts((), |contexts| {
        if let Some(root) = contexts.roots.get_mut(&root_id) {
            root.on_http_call_response(token, body_size);
        }
    });
}

/// A stream's request headers.
#[no_mangle]
pub extern "C" fn proxy_on_request_headers(
    context_id: u32,
    _num_headers: usize,
    _end_of_stream: bool,
) -> Action {
    #[cfg(feature = "crash-test")]
    crate::crash_test::trap_if_asked();
    with_contexts(Action::Continue, |contexts| {
        match contexts.streams.get_mut(&context_id) {
            Some(stream) => stream.on_request_headers(),
            None => Action::Continue,
        }
    })
}

/// A stream's response headers.
#[no_mangle]
pub extern "C" fn proxy_on_response_headers(
    context_id: u32,
    _num_headers: usize,
    _end_of_stream: bool,
) -> Action {
    with_contexts(Action::Continue, |contexts| {
        if let Some(stream) = contexts.streams.get_mut(&context_id) {
            stream.on_response_headers();
        }
        Action::Continue
    })
}

/// A context is gone: its state is dropped.
#[no_mangle]
pub extern "C" fn proxy_on_delete(context_id: u32) {
    with_contexts((), |contexts| {
        if contexts.streams.remove(&context_id).is_none() {
            contexts.roots.remove(&context_id);
        }
    });
}
