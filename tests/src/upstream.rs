//! The upstream behind Envoy in the tests: a small HTTP/1.1 server on a free
//! 127.0.0.1 port that answers every request with 200 and a JSON body
//! listing the request it saw, and records each request for assertions.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use serde_json::{json, Value};

/// Response header that marks a response as coming from this upstream.
pub const UPSTREAM_MARK: &str = "x-e2e-upstream";

/// Request header asking the upstream to add a header to its response:
/// `x-e2e-respond-header: NAME: VALUE` (e.g. `x-huntgate-session: end`).
pub const RESPOND_HEADER: &str = "x-e2e-respond-header";

/// Idle keep-alive connections are checked this often for shutdown.
const IDLE_POLL: Duration = Duration::from_millis(200);

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    /// Header names lowercased, in arrival order, duplicates kept.
    pub headers: Vec<(String, String)>,
}

impl SeenRequest {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The JSON body the upstream answers with.
    pub fn to_json(&self) -> Value {
        let mut headers: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (name, value) in &self.headers {
            headers.entry(name).or_default().push(value);
        }
        json!({
            "upstream": "echo",
            "method": self.method,
            "path": self.path,
            "headers": headers,
        })
    }
}

/// The running echo server; stops accepting when dropped.
pub struct Upstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Starts the server on an OS-assigned port of 127.0.0.1.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind echo upstream");
        let addr = listener.local_addr().expect("echo upstream address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let seen = Arc::clone(&seen);
            let stop = Arc::clone(&stop);
            thread::Builder::new()
                .name("echo-upstream".into())
                .spawn(move || accept_loop(&listener, &seen, &stop))
                .expect("spawn echo upstream")
        };
        Self {
            addr,
            seen,
            stop,
            acceptor: Some(acceptor),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many requests reached the upstream.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept().
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    seen: &Arc<Mutex<Vec<SeenRequest>>>,
    stop: &Arc<AtomicBool>,
) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let seen = Arc::clone(seen);
        let stop = Arc::clone(stop);
        // Connection threads end by themselves: on EOF, on error, or within
        // IDLE_POLL of the stop flag being set.
        let _ = thread::Builder::new()
            .name("echo-conn".into())
            .spawn(move || serve_connection(stream, &seen, &stop));
    }
}

fn serve_connection(stream: TcpStream, seen: &Mutex<Vec<SeenRequest>>, stop: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(IDLE_POLL));
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader, stop) {
        let body = request.to_json().to_string();
        let extra: String = request
            .headers
            .iter()
            .filter(|(name, _)| name == RESPOND_HEADER)
            .map(|(_, value)| format!("{value}\r\n"))
            .collect();
        seen.lock().unwrap_or_else(|e| e.into_inner()).push(request);
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{UPSTREAM_MARK}: echo\r\n\
             {extra}content-length: {}\r\n\r\n{body}",
            body.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// Reads one request; `None` on EOF, error, or shutdown.
fn read_request(reader: &mut BufReader<TcpStream>, stop: &AtomicBool) -> Option<SeenRequest> {
    let request_line = read_line(reader, stop)?;
    let mut parts = request_line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader, stop)?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let request = SeenRequest {
        method,
        path,
        headers,
    };
    if request
        .header("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
    {
        skip_chunked_body(reader, stop)?;
    } else if let Some(len) = request.header("content-length") {
        let len: u64 = len.parse().ok()?;
        let mut body = reader.by_ref().take(len);
        std::io::copy(&mut body, &mut std::io::sink()).ok()?;
    }
    Some(request)
}

/// One CRLF-terminated line without its terminator, waiting across read
/// timeouts until data arrives or the server stops.
fn read_line(reader: &mut BufReader<TcpStream>, stop: &AtomicBool) -> Option<String> {
    let mut line = String::new();
    loop {
        match reader.read_line(&mut line) {
            Ok(0) => return None,
            Ok(_) if line.ends_with('\n') => {
                return Some(line.trim_end_matches(['\r', '\n']).to_owned());
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::SeqCst) {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
}

fn skip_chunked_body(reader: &mut BufReader<TcpStream>, stop: &AtomicBool) -> Option<()> {
    loop {
        let size_line = read_line(reader, stop)?;
        let size = u64::from_str_radix(size_line.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            // Trailers, up to the empty line.
            while !read_line(reader, stop)?.is_empty() {}
            return Some(());
        }
        let mut chunk = reader.by_ref().take(size);
        std::io::copy(&mut chunk, &mut std::io::sink()).ok()?;
        read_line(reader, stop)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{raw_get, Client};

    #[test]
    fn echoes_and_records_request_headers() {
        let upstream = Upstream::start();
        let addr = SocketAddr::from(([127, 0, 0, 1], upstream.port()));
        let response = Client::new(addr).get(
            "/hunts/h1/x",
            &[("x-veltrix-hunter", "a"), ("x-veltrix-hunter", "b")],
        );
        assert_eq!(response.status, 200);
        assert_eq!(
            response.upstream_header("x-veltrix-hunter").as_deref(),
            Some("a")
        );
        assert_eq!(response.json()["headers"]["x-veltrix-hunter"][1], "b");
        assert_eq!(response.decision(), None);

        let response = raw_get(addr, "/a/../b%2F", &[("x-huntgate-decision", "admitted")]);
        assert_eq!(response.decision().as_deref(), Some("admitted"));
        let seen = upstream.requests();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1].path, "/a/../b%2F");
        assert_eq!(seen[1].header("x-huntgate-decision"), Some("admitted"));
    }
}
