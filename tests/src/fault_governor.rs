//! A governor stand-in that misbehaves on demand, for the fault tests: it serves a fixed
//! throttle document while [`Fault::Healthy`], and otherwise accepts and never answers,
//! answers too late, answers garbage, or answers a well-formed document with absurd values.
//! (The real governor's own failures — killed, restarted — are tested against the real
//! binary; these are the failures a real one cannot be made to show on purpose.)

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use serde_json::Value;

/// How often idle loops look at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);

/// What the stand-in does with the next request.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answers 200 with the document.
    Healthy,
    /// Reads the request and never answers (the connection stays open).
    Hung,
    /// Answers the document after this long.
    Slow(Duration),
    /// Answers 200 with a body that is not JSON.
    Garbage,
    /// Answers 200 with this (valid JSON, out-of-range values).
    Absurd(Value),
}

/// The stand-in; stopped (every connection closed) on drop.
pub struct FaultyGovernor {
    addr: SocketAddr,
    fault: Arc<Mutex<Fault>>,
    requests: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FaultyGovernor {
    /// Serves `document` on a free 127.0.0.1 port, healthy.
    pub fn start(document: Value) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the faulty governor");
        let addr = listener.local_addr().expect("local addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let fault = Arc::new(Mutex::new(Fault::Healthy));
        let requests = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, r, s) = (Arc::clone(&fault), Arc::clone(&requests), Arc::clone(&stop));
        let body = document.to_string();
        let thread = thread::spawn(move || accept_loop(&listener, &body, &f, &r, &s));
        Self {
            addr,
            fault,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes what the next requests get.
    pub fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap_or_else(|e| e.into_inner()) = fault;
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FaultyGovernor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    body: &str,
    fault: &Arc<Mutex<Fault>>,
    requests: &Arc<AtomicU64>,
    stop: &Arc<AtomicBool>,
) {
    let mut connections = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let (body, fault, requests, stop) = (
                    body.to_owned(),
                    Arc::clone(fault),
                    Arc::clone(requests),
                    Arc::clone(stop),
                );
                connections.push(thread::spawn(move || {
                    serve(stream, &body, &fault, &requests, &stop);
                }));
            }
            Err(_) => thread::sleep(STOP_POLL / 5),
        }
    }
    for c in connections {
        let _ = c.join();
    }
}

/// Reads one request head (and ignores any body); `false` at EOF or on stop.
fn read_head(stream: &mut TcpStream, stop: &AtomicBool) -> bool {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        match stream.read(&mut byte) {
            Ok(0) => return false,
            Ok(_) => head.push(byte[0]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return false,
        }
    }
    true
}

fn respond(stream: &mut TcpStream, body: &str) {
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\netag: \"1\"\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
}

/// Sleeps `d` unless stopped first; `false` if stopped.
fn pause(d: Duration, stop: &AtomicBool) -> bool {
    let mut left = d;
    while !left.is_zero() {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let step = left.min(STOP_POLL);
        thread::sleep(step);
        left -= step;
    }
    true
}

fn serve(
    mut stream: TcpStream,
    body: &str,
    fault: &Mutex<Fault>,
    requests: &AtomicU64,
    stop: &AtomicBool,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(STOP_POLL));
    if !read_head(&mut stream, stop) {
        return;
    }
    requests.fetch_add(1, Ordering::SeqCst);
    let now = fault.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match now {
        Fault::Healthy => respond(&mut stream, body),
        Fault::Hung => {
            // Hold the connection open, answering nothing, until the test ends.
            while pause(STOP_POLL, stop) {}
        }
        Fault::Slow(d) => {
            if pause(d, stop) {
                respond(&mut stream, body);
            }
        }
        Fault::Garbage => respond(&mut stream, "<html>502 upstream said no</html>{"),
        Fault::Absurd(document) => respond(&mut stream, &document.to_string()),
    }
}
