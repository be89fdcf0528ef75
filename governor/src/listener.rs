//! Connection hygiene for the HTTP API: a connection cap with slots reserved for probes,
//! a header-read timeout, an idle (keep-alive and stalled-write) timeout, and a kill switch
//! that bounds the shutdown drain. It plugs into `axum::serve` as a [`Listener`] whose
//! connections ([`GuardedIo`]) enforce the timeouts on their own reads and writes.
//!
//! - **Header-read timeout**: a connection must deliver a complete request head (up to the
//!   blank line) within `header_timeout` of being accepted, or of its first byte after a
//!   response. A client sending one byte a second is closed when it runs out.
//! - **Idle timeout**: after a response has been written, the next request must start
//!   within `idle_timeout`; a response the client does not read for that long is dropped.
//!   A request being handled (a long-poll waiting up to 60 s) has no deadline.
//! - **Cap**: at most `max_connections` API connections; beyond, up to `probe_connections`
//!   more are accepted into a reserved pool that answers only `/healthz`, `/readyz` and
//!   `/metrics` (everything else: 503), with short timeouts; beyond that a connection gets a
//!   best-effort 503 and is closed at once. So a flood of idle or half-sent connections never
//!   makes a liveness probe time out, and the process stays below its open-file limit (see
//!   [`fd_budget`]) so a policy reload can still open files.
//! - **Drain**: [`Gate::kill`] makes every connection fail its next read or write, which
//!   ends it; `serve` calls it when the drain deadline passes after SIGTERM.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Paths a connection of the reserved probe pool may ask for.
pub const PROBE_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];
/// File descriptors kept free for everything but API connections: policy reads, Redis and
/// Kafka clients (librdkafka opens several per broker), the state file, logs, and the up
/// to [`REJECTS_IN_FLIGHT`] refused connections being answered.
pub const FD_RESERVE: u64 = 128;

/// Limits of the API listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time to deliver a complete request head.
    pub header_timeout: Duration,
    /// Time between a response and the next request (and for a stalled write).
    pub idle_timeout: Duration,
    /// API connections at most.
    pub max_connections: usize,
    /// Extra connections reserved for probes (`/healthz`, `/readyz`, `/metrics`).
    pub probe_connections: usize,
    /// Header and idle timeout of a reserved probe connection.
    pub probe_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 512,
            probe_connections: 16,
            probe_timeout: Duration::from_secs(2),
        }
    }
}

/// The API connection cap that fits the open-file limit: `max_connections`, lowered so that
/// it plus the probe slots plus [`FD_RESERVE`] stay within `soft_limit` (the process's
/// `RLIMIT_NOFILE`, if known). Returns the cap and whether it was lowered.
pub fn fd_budget(soft_limit: Option<u64>, max_connections: usize, probes: usize) -> (usize, bool) {
    let Some(limit) = soft_limit else {
        return (max_connections, false);
    };
    let room = limit.saturating_sub(FD_RESERVE + probes as u64);
    let room = usize::try_from(room).unwrap_or(usize::MAX).max(1);
    if max_connections > room {
        (room, true)
    } else {
        (max_connections, false)
    }
}

/// The soft open-file limit from `/proc/self/limits` (Linux), if readable.
pub fn open_file_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Connection counts for `/metrics`.
#[derive(Debug, Default)]
pub struct ConnStats {
    /// API connections open now.
    pub open_api: AtomicU64,
    /// Reserved probe connections open now.
    pub open_probe: AtomicU64,
    /// Connections refused because every slot was taken.
    pub rejected: AtomicU64,
    /// Connections closed by the header-read, idle or write timeout.
    pub timed_out: AtomicU64,
    /// Connections closed by the drain deadline.
    pub killed: AtomicU64,
}

/// Which pool a connection belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// A regular API connection.
    Api,
    /// A reserved probe connection (only [`PROBE_PATHS`]).
    Probe,
}

/// What handlers learn about their connection (`ConnectInfo<ConnMeta>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnMeta {
    /// The connection's pool.
    pub pool: Pool,
    /// The peer.
    pub peer: SocketAddr,
}

/// Shared by the listener and its connections: slots, counters, the kill switch.
#[derive(Debug, Clone)]
pub struct Gate {
    limits: Limits,
    api: Arc<Semaphore>,
    probe: Arc<Semaphore>,
    /// Connection counters.
    pub stats: Arc<ConnStats>,
    kill: Arc<Notify>,
    killed: Arc<AtomicBool>,
    rejecting: Arc<Semaphore>,
}

/// Refused connections answered politely at once (each holds a descriptor up to
/// [`REJECT_LINGER`]); more are closed without waiting.
pub const REJECTS_IN_FLIGHT: usize = 32;
/// How long a refused connection may take to deliver its request and read the 503.
pub const REJECT_LINGER: Duration = Duration::from_secs(1);

impl Gate {
    /// A gate with these limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            api: Arc::new(Semaphore::new(limits.max_connections)),
            probe: Arc::new(Semaphore::new(limits.probe_connections)),
            stats: Arc::new(ConnStats::default()),
            kill: Arc::new(Notify::new()),
            killed: Arc::new(AtomicBool::new(false)),
            rejecting: Arc::new(Semaphore::new(REJECTS_IN_FLIGHT)),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Connections open now (both pools).
    pub fn open(&self) -> u64 {
        self.stats.open_api.load(Ordering::Relaxed) + self.stats.open_probe.load(Ordering::Relaxed)
    }

    /// Ends every connection at its next read or write (the drain deadline).
    pub fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        self.kill.notify_waiters();
    }

    /// Answers `503` and closes. While few rejections are in flight, the request is read
    /// (for at most [`REJECT_LINGER`]) so the close does not reset the connection before the
    /// client has read the answer; beyond [`REJECTS_IN_FLIGHT`] the connection is just closed.
    fn reject(&self, stream: TcpStream) {
        let Ok(permit) = Arc::clone(&self.rejecting).try_acquire_owned() else {
            let _ = stream.try_write(REJECT);
            // Read what already arrived, so the close is a FIN and the client can read the
            // 503 (closing with unread data would reset the connection).
            let mut sink = [0u8; 4096];
            for _ in 0..4 {
                match stream.try_read(&mut sink) {
                    Ok(n) if n > 0 => {}
                    _ => break,
                }
            }
            return;
        };
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let mut stream = stream;
            let _ = tokio::time::timeout(REJECT_LINGER, async {
                stream.write_all(REJECT).await?;
                stream.shutdown().await?;
                let mut sink = [0u8; 1024];
                while stream.read(&mut sink).await? > 0 {}
                Ok::<(), io::Error>(())
            })
            .await;
            drop(permit);
        });
    }

    fn admit(&self, stream: TcpStream) -> Option<GuardedIo> {
        let (pool, permit, header, idle) = match Arc::clone(&self.api).try_acquire_owned() {
            Ok(p) => (
                Pool::Api,
                p,
                self.limits.header_timeout,
                self.limits.idle_timeout,
            ),
            Err(_) => match Arc::clone(&self.probe).try_acquire_owned() {
                Ok(p) => (
                    Pool::Probe,
                    p,
                    self.limits.probe_timeout,
                    self.limits.probe_timeout,
                ),
                Err(_) => {
                    self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    self.reject(stream);
                    return None;
                }
            },
        };
        match pool {
            Pool::Api => &self.stats.open_api,
            Pool::Probe => &self.stats.open_probe,
        }
        .fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let peer = stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        Some(GuardedIo {
            stream,
            meta: ConnMeta { pool, peer },
            _permit: permit,
            header,
            idle,
            phase: Phase::Head,
            eol_run: 0,
            seen_text: false,
            deadline: Box::pin(tokio::time::sleep(header)),
            armed: true,
            kill: Box::pin(Arc::clone(&self.kill).notified_owned()),
            killed: Arc::clone(&self.killed),
            stats: Arc::clone(&self.stats),
        })
    }
}

const REJECT: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 22\r\n\r\ntoo many connections\r\n";

/// The API listener: a TCP listener whose accepted connections pass through a [`Gate`].
#[derive(Debug)]
pub struct GuardedListener {
    inner: TcpListener,
    gate: Gate,
    accept_errors: u64,
}

impl GuardedListener {
    /// Wraps a bound listener.
    pub fn new(inner: TcpListener, gate: Gate) -> Self {
        Self {
            inner,
            gate,
            accept_errors: 0,
        }
    }
}

/// Accept errors in a row between two log lines about them.
const ACCEPT_ERRORS_PER_LOG: u64 = 200;

impl Listener for GuardedListener {
    type Io = GuardedIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    self.accept_errors = 0;
                    if let Some(io) = self.gate.admit(stream) {
                        return (io, addr);
                    }
                }
                Err(e) => {
                    // Out of file descriptors (or another transient accept error): back off
                    // a little instead of spinning; the connection stays in the backlog.
                    if self.accept_errors % ACCEPT_ERRORS_PER_LOG == 0 {
                        tracing::warn!(error = %e, in_a_row = self.accept_errors + 1, "accept failed");
                    }
                    self.accept_errors = self.accept_errors.saturating_add(1);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl Connected<IncomingStream<'_, GuardedListener>> for ConnMeta {
    fn connect_info(stream: IncomingStream<'_, GuardedListener>) -> Self {
        stream.io().meta
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading a request head; the deadline is the header timeout.
    Head,
    /// A request is being handled: no deadline (unless a write stalls).
    Busy,
    /// A response was written; the deadline is the idle timeout until the next byte.
    Idle,
}

/// One accepted connection, enforcing the timeouts and the kill switch on its own I/O.
pub struct GuardedIo {
    stream: TcpStream,
    meta: ConnMeta,
    _permit: OwnedSemaphorePermit,
    header: Duration,
    idle: Duration,
    phase: Phase,
    eol_run: u8,
    seen_text: bool,
    deadline: Pin<Box<Sleep>>,
    armed: bool,
    kill: Pin<Box<tokio::sync::futures::OwnedNotified>>,
    killed: Arc<AtomicBool>,
    stats: Arc<ConnStats>,
}

impl std::fmt::Debug for GuardedIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedIo")
            .field("meta", &self.meta)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

impl Drop for GuardedIo {
    fn drop(&mut self) {
        match self.meta.pool {
            Pool::Api => &self.stats.open_api,
            Pool::Probe => &self.stats.open_probe,
        }
        .fetch_sub(1, Ordering::Relaxed);
    }
}

impl GuardedIo {
    /// The connection's pool and peer.
    pub fn meta(&self) -> ConnMeta {
        self.meta
    }

    fn arm(&mut self, after: Duration) {
        self.deadline.as_mut().reset(Instant::now() + after);
        self.armed = true;
    }

    /// Err if the connection must end now (killed, or its deadline passed).
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.killed.load(Ordering::SeqCst) || self.kill.as_mut().poll(cx).is_ready() {
            self.killed.store(true, Ordering::SeqCst);
            self.stats.killed.fetch_add(1, Ordering::Relaxed);
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "drain deadline passed",
            ));
        }
        if self.armed && self.deadline.as_mut().poll(cx).is_ready() {
            self.armed = false;
            self.stats.timed_out.fetch_add(1, Ordering::Relaxed);
            let what = match self.phase {
                Phase::Head => "request head not received in time",
                Phase::Idle => "connection idle too long",
                Phase::Busy => "response not read in time",
            };
            return Err(io::Error::new(io::ErrorKind::TimedOut, what));
        }
        Ok(())
    }

    /// Follows the bytes of request heads: a head ends at an empty line (CRLF or LF).
    fn saw(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.phase == Phase::Idle {
            self.phase = Phase::Head;
            let header = self.header;
            self.arm(header);
        }
        if self.phase != Phase::Head {
            return;
        }
        for &b in bytes {
            match b {
                b'\n' => {
                    self.eol_run = self.eol_run.saturating_add(1);
                    if self.eol_run >= 2 && self.seen_text {
                        self.phase = Phase::Busy;
                        self.armed = false;
                        self.eol_run = 0;
                        self.seen_text = false;
                        return;
                    }
                }
                b'\r' => {}
                _ => {
                    self.eol_run = 0;
                    self.seen_text = true;
                }
            }
        }
    }

    fn wrote(&mut self, n: usize) {
        if n > 0 {
            self.phase = Phase::Idle;
            let idle = self.idle;
            self.arm(idle);
        }
    }

    fn write_pending(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if !self.armed {
            // A response the client does not read: bounded by the idle timeout.
            let idle = self.idle;
            self.arm(idle);
        }
        self.check(cx)
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.stream).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(new)) = (&r, buf.filled().get(before..)) {
            this.saw(new);
        }
        r
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.killed.load(Ordering::SeqCst) {
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
        match Pin::new(&mut this.stream).poll_write(cx, data) {
            Poll::Ready(Ok(n)) => {
                this.wrote(n);
                Poll::Ready(Ok(n))
            }
            Poll::Pending => match this.write_pending(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
            other => other,
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.killed.load(Ordering::SeqCst) {
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
        match Pin::new(&mut this.stream).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(n)) => {
                this.wrote(n);
                Poll::Ready(Ok(n))
            }
            Poll::Pending => match this.write_pending(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
            other => other,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_budget_keeps_room_for_reloads() {
        // 256 open files (the setting): 256 - 128 - 16 = 112 API connections.
        assert_eq!(fd_budget(Some(256), 512, 16), (112, true));
        assert_eq!(fd_budget(Some(1 << 20), 512, 16), (512, false));
        assert_eq!(fd_budget(None, 512, 16), (512, false));
        assert_eq!(fd_budget(Some(10), 512, 16), (1, true));
    }
}
