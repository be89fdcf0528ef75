//! The HTTP API: `GET /v1/throttle` (conditional and long-poll), `/metrics`, `/healthz`,
//! `/readyz`. `app(state)` builds the router; tests drive it with `oneshot`, no socket.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use tokio::sync::watch;

use crate::document::ThrottleDocument;
use crate::governor::Snapshot;
use crate::listener::{ConnMeta, ConnStats, Pool, PROBE_PATHS};
use crate::metrics;

/// Longest accepted `wait_s`.
pub const MAX_WAIT_S: u64 = 60;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Snapshots published by the governor.
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// Becomes `true` at shutdown: waiting long-polls answer 304 at once.
    pub shutdown: watch::Receiver<bool>,
    /// Long-polls waiting right now.
    pub waiting: Arc<AtomicU64>,
    /// Connection counters of the listener (all zero without one, e.g. under `oneshot`).
    pub conns: Arc<ConnStats>,
}

impl AppState {
    /// State over a governor's snapshots and a shutdown flag.
    pub fn new(snapshots: watch::Receiver<Arc<Snapshot>>, shutdown: watch::Receiver<bool>) -> Self {
        Self {
            snapshots,
            shutdown,
            waiting: Arc::new(AtomicU64::new(0)),
            conns: Arc::new(ConnStats::default()),
        }
    }

    /// The same, reporting the listener's connection counters in `/metrics`.
    pub fn with_conns(mut self, conns: Arc<ConnStats>) -> Self {
        self.conns = conns;
        self
    }
}

/// Counts a waiting long-poll while alive.
struct Waiting(Arc<AtomicU64>);

impl Waiting {
    fn new(counter: &Arc<AtomicU64>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(counter))
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The one error type of the handlers.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A malformed request.
    #[error("{0}")]
    BadRequest(String),
    /// No evaluation has run yet.
    #[error("not ready: no evaluation has run yet")]
    NotReady,
    /// A reserved probe connection asked for something else than a probe.
    #[error(
        "too many connections: this connection may only ask for /healthz, /readyz or /metrics"
    )]
    ProbeOnly,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::NotReady | AppError::ProbeOnly => StatusCode::SERVICE_UNAVAILABLE,
        };
        let close = matches!(self, AppError::ProbeOnly);
        let body = serde_json::json!({ "error": self.to_string() });
        let mut r = (status, [(header::CACHE_CONTROL, "no-cache")], Json(body)).into_response();
        if close {
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        r
    }
}

/// Builds the router.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/v1/throttle", get(throttle))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .layer(axum::middleware::from_fn(probe_pool_only))
        .with_state(state)
}

/// Connections of the reserved probe pool (accepted past the API connection cap) may only
/// ask for [`PROBE_PATHS`].
async fn probe_pool_only(request: Request, next: Next) -> Response {
    let pool = request
        .extensions()
        .get::<ConnectInfo<ConnMeta>>()
        .map(|c| c.0.pool);
    if pool == Some(Pool::Probe) && !PROBE_PATHS.contains(&request.uri().path()) {
        return AppError::ProbeOnly.into_response();
    }
    next.run(request).await
}

/// Query of `/v1/throttle`.
#[derive(Debug, Deserialize)]
pub struct ThrottleQuery {
    /// With a matching `If-None-Match`: hold the request up to this many seconds (0–60)
    /// until the version changes.
    pub wait_s: Option<String>,
}

/// Whether `If-None-Match` names `version` (`"42"`, `W/"42"`, lists, `*`).
pub fn etag_matches(headers: &HeaderMap, version: u64) -> bool {
    let want = version.to_string();
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| {
            t == "*" || {
                let t = t.strip_prefix("W/").unwrap_or(t);
                t.trim_matches('"') == want
            }
        })
}

fn with_cache_headers(mut response: Response, doc: &ThrottleDocument) -> Response {
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&doc.etag()) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn not_modified(doc: &ThrottleDocument) -> Response {
    with_cache_headers(StatusCode::NOT_MODIFIED.into_response(), doc)
}

fn full(doc: &ThrottleDocument) -> Response {
    with_cache_headers(Json(doc).into_response(), doc)
}

async fn throttle(
    State(state): State<AppState>,
    Query(query): Query<ThrottleQuery>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let mut rx = state.snapshots.clone();
    let snapshot = rx.borrow_and_update().clone();
    if !snapshot.ready {
        return Err(AppError::NotReady);
    }
    let held = snapshot.document.version;
    if !etag_matches(&headers, held) {
        // The full document goes out at once: `wait_s` is ignored, even if malformed.
        return Ok(full(&snapshot.document));
    }
    let wait_s = match query.wait_s.as_deref() {
        None => 0,
        Some(raw) => match raw.parse::<u64>() {
            Ok(n) if n <= MAX_WAIT_S => n,
            _ => {
                return Err(AppError::BadRequest(format!(
                    "wait_s must be an integer in [0, {MAX_WAIT_S}], got `{}`",
                    crate::text::echo(raw)
                )))
            }
        },
    };
    if wait_s == 0 {
        return Ok(not_modified(&snapshot.document));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait_s);
    let mut shutdown = state.shutdown.clone();
    if *shutdown.borrow_and_update() {
        return Ok(not_modified(&snapshot.document));
    }
    let _waiting = Waiting::new(&state.waiting);
    loop {
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    // The governor is gone: answer with what we have.
                    return Ok(not_modified(&snapshot.document));
                }
                let latest = rx.borrow_and_update().clone();
                if latest.document.version != held {
                    return Ok(full(&latest.document));
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                let latest = rx.borrow().clone();
                if latest.document.version != held {
                    return Ok(full(&latest.document));
                }
                return Ok(not_modified(&latest.document));
            }
            _ = shutdown.changed() => {
                return Ok(not_modified(&snapshot.document));
            }
        }
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    let snapshot = state.snapshots.borrow().clone();
    let mut text = metrics::render(&snapshot);
    metrics::render_http(
        &mut text,
        state.waiting.load(Ordering::Relaxed),
        &state.conns,
    );
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Response {
    let snapshot = state.snapshots.borrow().clone();
    if snapshot.ready {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no evaluation has run yet\n",
        )
            .into_response()
    }
}
