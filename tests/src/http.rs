//! HTTP client helpers: requests through Envoy and to its admin API.
//!
//! [`Client`] uses ureq without connection pooling, so every request opens
//! a new connection and so always meets the listener's current filter chain
//! (after an LDS update, pooled connections would stay on the draining one).
//! [`raw_get`] writes the request line byte for byte, for paths that a URL
//! library would normalise or reject (`/x/../hunts/..`, `%2F`).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

use crate::upstream::UPSTREAM_MARK;

/// Timeout of a whole request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A response, fully read.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names lowercased, duplicates kept.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

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
        Response {
            status,
            headers,
            body,
        }
    }

    /// GET `path`, panicking unless the status is 200; returns the body.
    pub fn get_ok(&self, path: &str) -> String {
        let response = self.get(path, &[]);
        assert_eq!(response.status, 200, "GET {path}: {}", response.summary());
        response.body
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

/// GET with `target` as the HTTP/2 `:path`, byte for byte (curl over h2c with
/// prior knowledge and `--request-target`). `None` when curl could not send it
/// or got no HTTP answer (Envoy may reset a stream it refuses).
pub fn h2_get(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Option<Response> {
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
        command.arg("--header").arg(format!("{name}: {value}"));
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
        let mut request = format!("GET {path} HTTP/1.1\r\nhost: {}\r\n", self.addr);
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        self.reader
            .get_mut()
            .write_all(request.as_bytes())
            .unwrap_or_else(|e| panic!("send GET {path} to {}: {e}", self.addr));
        read_response(&mut self.reader)
            .unwrap_or_else(|e| panic!("reading the response to GET {path}: {e}"))
    }
}

/// Reads one HTTP/1.1 response.
fn read_response(reader: &mut impl BufRead) -> io::Result<Response> {
    let status_line = read_line(reader)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| malformed(&status_line))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').ok_or_else(|| malformed(&line))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut response = Response {
        status,
        headers,
        body: String::new(),
    };
    let mut body = Vec::new();
    if response
        .header("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let size_line = read_line(reader)?;
            let size = size_line
                .split(';')
                .next()
                .and_then(|size| usize::from_str_radix(size.trim(), 16).ok())
                .ok_or_else(|| malformed(&size_line))?;
            if size == 0 {
                while !read_line(reader)?.is_empty() {}
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(body.get_mut(start..).unwrap_or_default())?;
            read_line(reader)?;
        }
    } else if let Some(length) = response.header("content-length") {
        let length: u64 = length.parse().map_err(|_| malformed(length))?;
        reader.take(length).read_to_end(&mut body)?;
    } else {
        reader.read_to_end(&mut body)?;
    }
    response.body = String::from_utf8_lossy(&body).into_owned();
    Ok(response)
}

/// One CRLF-terminated line without its terminator.
fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed response: {what:?}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_chunked_response() {
        let raw: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 30\r\n\
            transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nnext";
        let response = read_response(&mut &raw[..]).expect("parses");
        assert_eq!(response.status, 429);
        assert_eq!(response.header("retry-after"), Some("30"));
        assert_eq!(response.body, "abcde");
    }

    #[test]
    fn reads_exactly_content_length() {
        let raw: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1";
        let response = read_response(&mut &raw[..]).expect("parses");
        assert_eq!(response.body, "ok");
    }
}
