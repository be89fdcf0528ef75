//! A minimal HTTP/1.1 client on one keep-alive connection: it sends exactly the
//! bytes it is given and reads one response per request with the harness's reader.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context as _, Result};

pub use huntgate_harness::http1::Response;

/// One keep-alive connection.
pub struct Connection {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Connection {
    /// Connects to `127.0.0.1:port`.
    pub fn open(port: u16, timeout: Duration) -> Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .with_context(|| format!("connect to 127.0.0.1:{port}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Self {
            writer: stream,
            reader,
        })
    }

    /// Sends one raw request and reads its response.
    pub fn round_trip(&mut self, request: &[u8]) -> Result<Response> {
        self.writer.write_all(request)?;
        self.read_response()
    }

    fn read_response(&mut self) -> Result<Response> {
        huntgate_harness::http1::read_response(&mut self.reader).context("reading a response")
    }
}

/// A GET request with `headers`, keep-alive.
pub fn get(path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut request = format!("GET {path} HTTP/1.1\r\nhost: bench\r\n");
    for (name, value) in headers {
        request.push_str(name);
        request.push_str(": ");
        request.push_str(value);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request.into_bytes()
}

/// A POST request with a JSON `body`, keep-alive.
pub fn post_json(path: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// One GET on a fresh connection (admin and governor calls).
pub fn get_once(port: u16, path: &str, headers: &[(&str, &str)]) -> Result<Response> {
    let mut connection = Connection::open(port, Duration::from_secs(30))?;
    let mut extra = headers.to_vec();
    extra.push(("connection", "close"));
    connection.round_trip(&get(path, &extra))
}
