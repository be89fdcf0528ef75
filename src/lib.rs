//! huntgate: the Envoy HTTP filter (proxy-wasm, wasm32) that admits hunters into
//! hunts up to a live limit and never freezes a hunter it admitted.
//!
//! This crate is only the adapter: the logic lives in `huntgate-core`.

#[cfg(feature = "crash-test")]
mod crash_test;
mod host;
mod http_context;
mod metrics;
mod root_context;

proxy_wasm::main! {{
    std::panic::set_hook(Box::new(|info| {
        host::log(host::Level::Error, &format!("panic: {info}"));
    }));
    proxy_wasm::set_root_context(|context_id| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root_context::HuntgateRoot::new(context_id))
    });
}}
