//! Test-only (cargo feature `crash-test`, never in a release build): an HTTP context that
//! traps the worker's VM when a request carries [`CRASH_HEADER`], so the e2e suite can show
//! what Envoy's `failure_policy: FAIL_RELOAD` keeps (shared data: counts and sessions) and
//! what it loses (the crashing request). Every other request goes to the real context.

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

/// The request header that traps the VM.
pub const CRASH_HEADER: &str = "x-huntgate-test-crash";

/// The real HTTP context, with the trap in front.
pub struct Crashing(pub Box<dyn HttpContext>);

impl Context for Crashing {}

impl HttpContext for Crashing {
    #[allow(clippy::panic)] // the point of this test-only build
    fn on_http_request_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        if self.get_http_request_header(CRASH_HEADER).is_some() {
            panic!("{CRASH_HEADER}: trapping this VM on purpose (crash-test build)");
        }
        self.0.on_http_request_headers(num_headers, end_of_stream)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.0.on_http_request_body(body_size, end_of_stream)
    }

    fn on_http_response_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        self.0.on_http_response_headers(num_headers, end_of_stream)
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.0.on_http_response_body(body_size, end_of_stream)
    }

    fn on_log(&mut self) {
        self.0.on_log();
    }
}
