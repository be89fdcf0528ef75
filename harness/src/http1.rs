//! Reading one HTTP/1.1 response off a stream: the status line, the headers (names
//! lowercased), and a body framed by `Transfer-Encoding: chunked`, `Content-Length`, or —
//! when neither is present — the end of the stream (none for 1xx, 204 and 304, which have
//! no body). The clients of the tests and the bench send their own request bytes and read
//! with this.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Header pairs in arrival order, names lowercased, duplicates kept.
    pub headers: Vec<(String, String)>,
    /// The body (lossy UTF-8).
    pub body: String,
}

impl Response {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (any case), in arrival order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Reads one response from `reader` (which may hold more after it: keep-alive).
pub fn read_response(reader: &mut impl BufRead) -> io::Result<Response> {
    let status_line = read_line(reader)?;
    let status: u16 = status_line
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
    let bodiless = status < 200 || status == 204 || status == 304;
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
    } else if !bodiless {
        reader.read_to_end(&mut body)?;
    }
    response.body = String::from_utf8_lossy(&body).into_owned();
    Ok(response)
}

/// `GET path` over a fresh connection to `addr` (`connection: close`), every step bounded
/// by `timeout`: for readiness probes of servers that may not listen yet.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )?;
    read_response(&mut BufReader::new(stream))
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
    #![allow(clippy::expect_used)]

    use super::*;

    #[test]
    fn parses_a_chunked_response_and_leaves_what_follows() {
        let raw: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 30\r\n\
            transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nnext";
        let mut reader = raw;
        let response = read_response(&mut reader).expect("parses");
        assert_eq!(response.status, 429);
        assert_eq!(response.header("retry-after"), Some("30"));
        assert_eq!(response.body, "abcde");
        assert_eq!(reader, b"next");
    }

    #[test]
    fn reads_exactly_content_length_and_nothing_after_a_304() {
        let raw: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 304 Not Modified\r\netag: \"1\"\r\n\r\nrest";
        let mut reader = raw;
        assert_eq!(read_response(&mut reader).expect("parses").body, "ok");
        let not_modified = read_response(&mut reader).expect("parses");
        assert_eq!((not_modified.status, not_modified.body.as_str()), (304, ""));
        assert_eq!(reader, b"rest");
    }
}
