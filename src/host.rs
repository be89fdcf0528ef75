//! The calls this module makes into the proxy-wasm host (the ABI's imports;
//! `exports.rs` is the other direction).
//!
//! Bound directly, without the proxy-wasm SDK: its `hostcalls` panic on unexpected
//! statuses and on non-UTF-8 header values (a trap that would kill the worker's VM),
//! so every status becomes a `Result` here.

use std::ptr::null_mut;

use huntgate_core::shared_data::{SetOutcome, SharedData, StoreError};

/// Host status codes (proxy-wasm ABI 0.2).
const STATUS_OK: u32 = 0;
const STATUS_NOT_FOUND: u32 = 1;
const STATUS_CAS_MISMATCH: u32 = 8;

/// Header maps (proxy-wasm ABI `MapType`).
#[derive(Debug, Clone, Copy)]
#[repr(u32)]
pub enum HeaderMap {
    /// Request headers.
    Request = 0,
    /// Response headers.
    Response = 2,
    /// Headers of a dispatched HTTP call's response.
    CallResponse = 6,
}

/// Metric kinds (proxy-wasm ABI `MetricType`).
#[derive(Debug, Clone, Copy)]
#[repr(u32)]
pub enum MetricKind {
    /// Monotonic counter.
    Counter = 0,
    /// Gauge.
    Gauge = 1,
}

/// Log levels (proxy-wasm ABI `LogLevel`).
#[derive(Debug, Clone, Copy)]
#[repr(u32)]
pub enum Level {
    /// Information.
    Info = 2,
    /// Warning.
    Warn = 3,
    /// Error.
    Error = 4,
}

/// Buffer holding the plugin configuration (proxy-wasm ABI `BufferType`).
const PLUGIN_CONFIGURATION_BUFFER: u32 = 7;
/// Buffer holding an HTTP call's response body (proxy-wasm ABI `BufferType`).
const HTTP_CALL_RESPONSE_BODY_BUFFER: u32 = 4;

extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_http_call(
        upstream_data: *const u8,
        upstream_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        body_data: *const u8,
        body_size: usize,
        trailers_data: *const u8,
        trailers_size: usize,
        timeout_ms: u32,
        return_token: *mut u32,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
}

/// A host call that did not return Ok.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostError {
    /// The call.
    pub call: &'static str,
    /// The status it returned.
    pub status: u32,
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} returned status {}", self.call, self.status)
    }
}

fn check(call: &'static str, status: u32) -> Result<(), HostError> {
    if status == STATUS_OK {
        Ok(())
    } else {
        Err(HostError { call, status })
    }
}

/// Takes ownership of a buffer the host allocated through `proxy_on_memory_allocate`.
///
/// # Safety
/// `data` must be null or a `size`-byte allocation made by this module's allocator.
unsafe fn take_host_buffer(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        Vec::new()
    } else {
        Vec::from_raw_parts(data, size, size)
    }
}

/// Writes a log line; failures to log are ignored (there is nowhere else to report them).
pub fn log(level: Level, message: &str) {
    // SAFETY: pointer and length come from a live &str.
    unsafe {
        proxy_log(level as u32, message.as_ptr(), message.len());
    }
}

/// Current wall-clock time in unix milliseconds.
pub fn now_ms() -> Result<u64, HostError> {
    let mut nanos: u64 = 0;
    // SAFETY: the host writes one u64 into `nanos`.
    check("get_current_time", unsafe {
        proxy_get_current_time_nanoseconds(&mut nanos)
    })?;
    Ok(nanos / 1_000_000)
}

/// Asks for `on_tick` every `period_ms`.
pub fn set_tick_period_ms(period_ms: u32) -> Result<(), HostError> {
    // SAFETY: plain value call.
    check("set_tick_period", unsafe {
        proxy_set_tick_period_milliseconds(period_ms)
    })
}

/// Up to `max_size` bytes of a host buffer (empty when there is none).
fn buffer(buffer_type: u32, max_size: usize, call: &'static str) -> Result<Vec<u8>, HostError> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: the host allocates the returned buffer with our allocator; we take it.
    let status = unsafe { proxy_get_buffer_bytes(buffer_type, 0, max_size, &mut data, &mut size) };
    match status {
        STATUS_OK => Ok(unsafe { take_host_buffer(data, size) }),
        STATUS_NOT_FOUND => Ok(Vec::new()),
        status => Err(HostError { call, status }),
    }
}

/// The plugin configuration bytes (empty when none is set).
pub fn plugin_configuration() -> Result<Vec<u8>, HostError> {
    buffer(
        PLUGIN_CONFIGURATION_BUFFER,
        usize::MAX,
        "get_buffer(plugin_configuration)",
    )
}

/// Up to `max_size` bytes of the current HTTP call response body.
pub fn call_response_body(max_size: usize) -> Result<Vec<u8>, HostError> {
    buffer(
        HTTP_CALL_RESPONSE_BODY_BUFFER,
        max_size,
        "get_buffer(http_call_response_body)",
    )
}

/// Dispatches an HTTP call to an Envoy cluster; the answer arrives in the
/// calling root context's `on_http_call_response` with the returned token.
pub fn dispatch_http_call(
    cluster: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout_ms: u32,
) -> Result<u32, HostError> {
    let serialized_headers = huntgate_core::abi::encode_header_pairs(headers);
    let no_trailers = huntgate_core::abi::encode_header_pairs(&[]);
    let body = body.unwrap_or_default();
    let mut token: u32 = 0;
    // SAFETY: pointers and lengths come from live buffers; the host writes one u32.
    check("http_call", unsafe {
        proxy_http_call(
            cluster.as_ptr(),
            cluster.len(),
            serialized_headers.as_ptr(),
            serialized_headers.len(),
            body.as_ptr(),
            body.len(),
            no_trailers.as_ptr(),
            no_trailers.len(),
            timeout_ms,
            &mut token,
        )
    })?;
    Ok(token)
}

/// The Envoy node id (`node.id`, in Istio the pod's), or `None` when unset.
pub fn node_id() -> Option<String> {
    // A property path is its segments, each followed by NUL.
    let path = b"node\0id\0";
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the path is a live byte string; the host writes a pointer and size
    // into the two locals and hands the buffer's ownership to us.
    let status = unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) };
    // SAFETY: on success the host allocated `size` bytes at `data` through our allocator.
    let bytes = unsafe { take_host_buffer(data, size) };
    if status != STATUS_OK {
        return None;
    }
    String::from_utf8(bytes).ok().filter(|id| !id.is_empty())
}

/// The serialized pairs of a header map (one host call); decode them with
/// `huntgate_core::abi::decode_header_pairs_borrowed`.
pub fn header_map_bytes(map: HeaderMap) -> Result<Vec<u8>, HostError> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: as for `plugin_configuration`.
    check("get_header_map_pairs", unsafe {
        proxy_get_header_map_pairs(map as u32, &mut data, &mut size)
    })?;
    Ok(unsafe { take_host_buffer(data, size) })
}

/// The error of a header map that does not decode.
pub const UNDECODABLE_HEADERS: HostError = HostError {
    call: "get_header_map_pairs(decode)",
    status: 0,
};

/// All pairs of a header map, values decoded lossily (non-UTF-8 bytes become U+FFFD).
pub fn header_pairs(map: HeaderMap) -> Result<Vec<(String, String)>, HostError> {
    let bytes = header_map_bytes(map)?;
    huntgate_core::abi::decode_header_pairs(&bytes).ok_or(HostError {
        call: "get_header_map_pairs(decode)",
        status: 0,
    })
}

/// The value of one header (the first, if repeated), `None` when absent.
pub fn get_header(map: HeaderMap, name: &str) -> Result<Option<Vec<u8>>, HostError> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: as for `plugin_configuration`; the name comes from a live &str.
    let status = unsafe {
        proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), &mut data, &mut size)
    };
    match status {
        STATUS_OK if data.is_null() => Ok(None),
        STATUS_OK => Ok(Some(unsafe { take_host_buffer(data, size) })),
        STATUS_NOT_FOUND => Ok(None),
        status => Err(HostError {
            call: "get_header_map_value",
            status,
        }),
    }
}

/// Replaces (or sets) one header.
pub fn set_header(map: HeaderMap, name: &str, value: &str) -> Result<(), HostError> {
    // SAFETY: pointers and lengths come from live &str values.
    check("replace_header_map_value", unsafe {
        proxy_replace_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// Removes every value of one header.
pub fn remove_header(map: HeaderMap, name: &str) -> Result<(), HostError> {
    // SAFETY: pointer and length come from a live &str.
    check("remove_header_map_value", unsafe {
        proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len())
    })
}

/// Adds one header (keeping existing ones of the same name).
pub fn add_header(map: HeaderMap, name: &str, value: &str) -> Result<(), HostError> {
    // SAFETY: pointers and lengths come from live &str values.
    check("add_header_map_value", unsafe {
        proxy_add_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// Sends a local reply and stops the request.
pub fn send_reply(status: u32, headers: &[(&str, &str)], body: &[u8]) -> Result<(), HostError> {
    let serialized = huntgate_core::abi::encode_header_pairs(headers);
    const DETAILS: &str = "huntgate";
    // SAFETY: pointers and lengths come from live buffers.
    check("send_local_response", unsafe {
        proxy_send_local_response(
            status,
            DETAILS.as_ptr(),
            DETAILS.len(),
            body.as_ptr(),
            body.len(),
            serialized.as_ptr(),
            serialized.len(),
            -1,
        )
    })
}

/// Defines (or finds) a metric and returns its id.
pub fn define_metric(kind: MetricKind, name: &str) -> Result<u32, HostError> {
    let mut id: u32 = 0;
    // SAFETY: the host writes one u32 into `id`.
    check("define_metric", unsafe {
        proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id)
    })?;
    Ok(id)
}

/// Adds `delta` to a metric.
pub fn increment_metric(id: u32, delta: i64) -> Result<(), HostError> {
    // SAFETY: plain value call.
    check("increment_metric", unsafe {
        proxy_increment_metric(id, delta)
    })
}

/// Sets a gauge.
pub fn record_metric(id: u32, value: u64) -> Result<(), HostError> {
    // SAFETY: plain value call.
    check("record_metric", unsafe { proxy_record_metric(id, value) })
}

/// Envoy shared data of this VM id.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostSharedData;

impl SharedData for HostSharedData {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        let mut data: *mut u8 = null_mut();
        let mut size: usize = 0;
        let mut cas: u32 = 0;
        // SAFETY: as for `plugin_configuration`; the host writes `cas`.
        let status = unsafe {
            proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas)
        };
        match status {
            STATUS_OK => Ok(Some((unsafe { take_host_buffer(data, size) }, cas))),
            STATUS_NOT_FOUND => Ok(None),
            status => Err(StoreError::Host(format!(
                "get_shared_data({key}) returned status {status}"
            ))),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<SetOutcome, StoreError> {
        // SAFETY: pointers and lengths come from live buffers.
        let status = unsafe {
            proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
        };
        match status {
            STATUS_OK => Ok(SetOutcome::Written),
            STATUS_CAS_MISMATCH => Ok(SetOutcome::CasMismatch),
            status => Err(StoreError::Host(format!(
                "set_shared_data({key}) returned status {status}"
            ))),
        }
    }
}
