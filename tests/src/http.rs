//! HTTP client helpers: requests through Envoy and to its admin API.
//!
//! [`Client`] uses ureq without connection pooling, so every request opens
//! a new connection and so always meets the listener's current filter chain
//! (after an LDS update, pooled connections would stay on the draining one).
//! [`raw_get`] writes the request line byte for byte, for paths that a URL
//! library would normalise or reject (`/x/../hunts/..`, `%2F`).

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use huntgate_harness::http1;
use serde_json::Value;

use crate::upstream::UPSTREAM_MARK;

/// Timeout of a whole request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A response, fully read: the harness's (status, headers with names lowercased and
/// duplicates kept, body; `header` and `header_all`), with what the e2e tests read in it.
#[derive(Debug, Clone)]
pub struct Response(pub http1::Response);

impl std::ops::Deref for Response {
    type Target = http1::Response;
    fn deref(&self) -> &http1::Response {
        &self.0
    }
}

impl Response {
    /// The body as JSON; panics with the body if it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?} (status {})",
                self.body, self.status
            )
        })
    }

    /// Whether the echo upstream produced this response.
    pub fn from_upstream(&self) -> bool {
        self.header(UPSTREAM_MARK).is_some()
    }

    /// The first value of request header `name` as the upstream saw it;
    /// `None` if the header did not reach upstream or the response is not
    /// the upstream's.
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        if !self.from_upstream() {
            return None;
        }
        self.json()["headers"][name.to_ascii_lowercase()][0]
            .as_str()
            .map(str::to_owned)
    }

    /// The `x-huntgate-decision` the upstream saw.
    pub fn decision(&self) -> Option<String> {
        self.upstream_header("x-huntgate-decision")
    }

    /// The ticket issued with this response (`x-huntgate-ticket`).
    pub fn ticket(&self) -> Option<String> {
        self.header("x-huntgate-ticket").map(str::to_owned)
    }

    /// A one-line summary for assertion messages.
    pub fn summary(&self) -> String {
        format!("{} {:?} body={}", self.status, self.headers, self.body)
    }
}

/// Requests to one `127.0.0.1:port`, one connection per request.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .build();
        Self {
            agent: config.into(),
            base: format!("http://{addr}"),
        }
    }

    /// GET `path` with `headers` (a name may repeat: each pair is sent).
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        let url = format!("{}{path}", self.base);
        let mut request = self.agent.get(&url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut response = request
            .call()
            .unwrap_or_else(|e| panic!("GET {url} failed: {e}"));
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = response
            .body_mut()
            .read_to_string()
            .unwrap_or_else(|e| panic!("reading body of GET {url}: {e}"));
        Response(http1::Response {
            status,
            headers,
            body,
        })
    }

    /// GET `path`, panicking unless the status is 200; returns the body.
    pub fn get_ok(&self, path: &str) -> String {
        let response = self.get(path, &[]);
        assert_eq!(response.status, 200, "GET {path}: {}", response.summary());
        response.0.body
    }
}

/// GET with `raw_path` written verbatim in the request line, over a fresh
/// connection. The response is read up to its end as framed by
/// content-length or chunking (Envoy delays closing the connection, so
/// waiting for EOF would cost a second per request).
pub fn raw_get(addr: SocketAddr, raw_path: &str, headers: &[(&str, &str)]) -> Response {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(REQUEST_TIMEOUT)).ok();
    let mut request = format!("GET {raw_path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .unwrap_or_else(|e| panic!("send GET {raw_path}: {e}"));
    read_response(&mut BufReader::new(stream))
        .unwrap_or_else(|e| panic!("reading the response to GET {raw_path}: {e}"))
}

/// `request` written to a fresh connection byte for byte (for bytes that are not UTF-8,
/// or framing a client library refuses to produce), and the answer read as by
/// [`raw_get`]. `Err` when Envoy closed the connection without an HTTP answer.
pub fn raw_request(addr: SocketAddr, request: &[u8]) -> io::Result<Response> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT)).ok();
    stream.write_all(request)?;
    read_response(&mut BufReader::new(stream))
}

/// GET with `target` as the HTTP/2 `:path`, byte for byte (curl over h2c with
/// prior knowledge and `--request-target`). `None` when curl could not send it
/// or got no HTTP answer (Envoy may reset a stream it refuses).
pub fn h2_get(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Option<Response> {
    let headers: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(name, value)| (*name, value.as_bytes()))
        .collect();
    h2_get_bytes(addr, target, &headers)
}

/// [`h2_get`] with header values as bytes (curl passes them through, UTF-8 or not).
pub fn h2_get_bytes(addr: SocketAddr, target: &str, headers: &[(&str, &[u8])]) -> Option<Response> {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;
    let mut command = std::process::Command::new("curl");
    command.args([
        "--silent",
        "--include",
        "--http2-prior-knowledge",
        "--path-as-is",
        "--max-time",
        "10",
        "--request-target",
        target,
    ]);
    for (name, value) in headers {
        let mut header = format!("{name}: ").into_bytes();
        header.extend_from_slice(value);
        command.arg("--header").arg(OsString::from_vec(header));
    }
    command.arg(format!("http://{addr}/"));
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("run curl (is it installed?): {e}"));
    if !output.status.success() || output.stdout.is_empty() {
        return None;
    }
    read_response(&mut BufReader::new(output.stdout.as_slice())).ok()
}

/// One keep-alive HTTP/1.1 connection: every request on it is served by the
/// Envoy worker that accepted it.
pub struct Connection {
    addr: SocketAddr,
    reader: BufReader<TcpStream>,
}

impl Connection {
    /// Opens a connection to `addr`.
    pub fn open(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(REQUEST_TIMEOUT)).ok();
        stream.set_nodelay(true).ok();
        Self {
            addr,
            reader: BufReader::new(stream),
        }
    }

    /// GET `path` with `headers` on this connection.
    pub fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.request("GET", path, headers)
    }

    /// `method` (without a body) on `path` with `headers` on this connection.
    pub fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut request = format!("{method} {path} HTTP/1.1\r\nhost: {}\r\n", self.addr);
        if method != "GET" {
            request.push_str("content-length: 0\r\n");
        }
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        self.reader
            .get_mut()
            .write_all(request.as_bytes())
            .unwrap_or_else(|e| panic!("send {method} {path} to {}: {e}", self.addr));
        read_response(&mut self.reader)
            .unwrap_or_else(|e| panic!("reading the response to {method} {path}: {e}"))
    }
}

/// One response off `reader`, read by the harness's HTTP/1.1 reader.
fn read_response(reader: &mut impl BufRead) -> io::Result<Response> {
    http1::read_response(reader).map(Response)
}
