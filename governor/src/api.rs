//! The HTTP API: `GET /v1/throttle` (conditional and long-poll), `POST /v1/leases`
//! (the fleet lease exchange), `GET /v1/fleet`, `/metrics`, `/healthz`, `/readyz`.
//! `app(state)` builds the router; tests drive it with `oneshot`, no socket.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::sync::watch;

use crate::clock::{Clock, SystemClock};
use crate::coordination::Coordination;
use crate::document::ThrottleDocument;
use crate::fleet::ends::{retain_ms, EndsLog, MAX_ENDS_PER_ANSWER};
use crate::fleet::exchange::{
    grant_all, limits, render_metrics, validate, EndsAnswer, ExchangeAnswer, LeaseRequest,
    ValidReport,
};
use crate::fleet::{AllocatorConfig, Fleet};
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
    /// The fleet's lease allocation (this replica's, in memory), used without
    /// `coordination`.
    pub fleet: Arc<std::sync::Mutex<Fleet>>,
    /// The coordination Redis shared with the other replicas: when set, it holds the
    /// allocation instead of `fleet`.
    pub coordination: Option<Arc<Coordination>>,
    /// The fleet's ended sessions (this replica's, in memory), used without
    /// `coordination`.
    pub ends: Arc<std::sync::Mutex<EndsLog>>,
    /// Ends proxies reported to this replica.
    pub ends_reported: Arc<AtomicU64>,
    /// Lease exchanges this replica answered with shares.
    pub exchanges: Arc<AtomicU64>,
    /// The lease allocator's settings.
    pub fleet_config: AllocatorConfig,
    /// The clock leases are counted on.
    pub clock: Arc<dyn Clock>,
    /// Outcomes of the gRPC mutations (shared by both gRPC listeners).
    pub mutations: Arc<crate::grpc::MutationStats>,
}

impl AppState {
    /// State over a governor's snapshots and a shutdown flag.
    pub fn new(snapshots: watch::Receiver<Arc<Snapshot>>, shutdown: watch::Receiver<bool>) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let fleet_config = AllocatorConfig::default();
        // A governor that starts knows no lease in flight: it learns first.
        let fleet = Fleet::starting(clock.now_ms(), &fleet_config);
        Self {
            snapshots,
            shutdown,
            waiting: Arc::new(AtomicU64::new(0)),
            conns: Arc::new(ConnStats::default()),
            fleet: Arc::new(std::sync::Mutex::new(fleet)),
            coordination: None,
            ends: Arc::new(std::sync::Mutex::new(EndsLog::new(new_epoch(
                clock.as_ref(),
            )))),
            ends_reported: Arc::new(AtomicU64::new(0)),
            exchanges: Arc::new(AtomicU64::new(0)),
            fleet_config,
            clock,
            mutations: Arc::default(),
        }
    }

    /// The same, keeping the lease allocation in the coordination Redis.
    pub fn with_coordination(mut self, coordination: Arc<Coordination>) -> Self {
        self.coordination = Some(coordination);
        self
    }

    /// The same, with leases counted on `clock` (the fleet state starts over,
    /// learning from `clock`'s now).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        let fleet = Fleet::starting(clock.now_ms(), &self.fleet_config);
        self.fleet = Arc::new(std::sync::Mutex::new(fleet));
        self.clock = clock;
        self
    }

    /// The same, reporting the listener's connection counters in `/metrics`.
    pub fn with_conns(mut self, conns: Arc<ConnStats>) -> Self {
        self.conns = conns;
        self
    }
}

/// A name for this start's ends log: the start time and the process id, so a cursor
/// from a previous governor is never taken for one of this log's.
fn new_epoch(clock: &dyn Clock) -> u64 {
    clock.now_ms() ^ u64::from(std::process::id()).rotate_left(44)
}

/// Records the report's ends and reads the others' for its answer: in the coordination
/// Redis when there is one (a failure there leaves `ends` out of the answer: the proxy
/// reports its ends again and keeps its cursor), else in this replica's log.
async fn exchange_ends(state: &AppState, report: &ValidReport, now: u64) -> Option<EndsAnswer> {
    state
        .ends_reported
        .fetch_add(report.ends.len() as u64, Ordering::Relaxed);
    let since = match &state.coordination {
        Some(coordination) => match coordination.exchange_ends(report, now).await {
            Ok(since) => since,
            Err(e) => {
                tracing::warn!(error = %e, proxy = %report.proxy, "fleet ends not exchanged: the proxy reports its ends again");
                return None;
            }
        },
        None => {
            let mut log = state.ends.lock().ok()?;
            let origin = report.origin();
            log.record(origin, &report.ends, retain_ms(report.session_ttl_ms), now);
            log.since(report.ends_after.as_deref(), origin, MAX_ENDS_PER_ANSWER)
        }
    };
    Some(EndsAnswer::new(since))
}

/// The fleet-ends lines: ends reported to this replica and, for the in-memory log, the ends
/// it holds and those dropped at its bound.
fn render_ends(out: &mut String, state: &AppState) {
    use std::fmt::Write as _;
    let reported = state.ends_reported.load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "# HELP huntgate_fleet_ends_reported_total Ended sessions proxies reported to this replica.\n# TYPE huntgate_fleet_ends_reported_total counter\nhuntgate_fleet_ends_reported_total {reported}"
    );
    if state.coordination.is_some() {
        return;
    }
    let Ok(log) = state.ends.lock() else {
        return;
    };
    let _ = writeln!(
        out,
        "# HELP huntgate_fleet_ends_held Ended sessions the fleet-ends log holds for proxies to learn.\n# TYPE huntgate_fleet_ends_held gauge\nhuntgate_fleet_ends_held {}\n# HELP huntgate_fleet_ends_dropped_total Ends dropped at the log's bound before their tickets expired.\n# TYPE huntgate_fleet_ends_dropped_total counter\nhuntgate_fleet_ends_dropped_total {}",
        log.len(),
        log.dropped
    );
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
    /// The lease state could not be used (a handler panicked holding it).
    #[error("lease state unavailable")]
    Unavailable,
    /// The coordination Redis failed or was too slow (the proxy keeps its lease).
    #[error("{0}")]
    Coordination(#[from] crate::coordination::CoordinationError),
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
            AppError::NotReady
            | AppError::ProbeOnly
            | AppError::Unavailable
            | AppError::Coordination(_) => StatusCode::SERVICE_UNAVAILABLE,
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
        .route("/v1/leases", post(leases))
        .route("/v1/fleet", get(fleet_view))
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

/// `POST /v1/leases`: one proxy's report in, its shares (with the document) out.
async fn leases(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, AppError> {
    let snapshot = state.snapshots.borrow().clone();
    if !snapshot.ready {
        return Err(AppError::NotReady);
    }
    let request: LeaseRequest = serde_json::from_slice(&body).map_err(|e| {
        AppError::BadRequest(format!(
            "lease report: {}",
            crate::text::echo(&e.to_string())
        ))
    })?;
    let report = validate(request).map_err(AppError::BadRequest)?;
    let now = state.clock.now_ms();
    let document = &snapshot.document;
    let leases = match &state.coordination {
        Some(coordination) => {
            coordination
                .exchange(document, &report, now, &state.fleet_config)
                .await?
        }
        None => {
            let mut fleet = state.fleet.lock().map_err(|_| AppError::Unavailable)?;
            grant_all(
                &mut fleet,
                &report,
                limits(document),
                now,
                &state.fleet_config,
            )
        }
    };
    let ends = exchange_ends(&state, &report, now).await;
    let answer = ExchangeAnswer {
        document,
        leases,
        ends,
    };
    state.exchanges.fetch_add(1, Ordering::Relaxed);
    let mut response = Json(answer).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// Per hunt the allocation as this replica sees it: its own memory, or the coordination
/// Redis.
pub(crate) async fn fleet_views(
    state: &AppState,
) -> Result<std::collections::BTreeMap<String, crate::fleet::HuntView>, AppError> {
    let now = state.clock.now_ms();
    match &state.coordination {
        Some(coordination) => {
            let snapshot = state.snapshots.borrow().clone();
            Ok(coordination
                .view(&snapshot.document, now, &state.fleet_config)
                .await?)
        }
        None => {
            let fleet = state.fleet.lock().map_err(|_| AppError::Unavailable)?;
            Ok(fleet.view(now, &state.fleet_config))
        }
    }
}

/// `GET /v1/fleet`: hunts × proxies as allocated (by this replica, or by every replica
/// sharing the coordination Redis).
async fn fleet_view(State(state): State<AppState>) -> Result<Response, AppError> {
    let view = fleet_views(&state).await?;
    Ok(Json(serde_json::json!({"hunts": view})).into_response())
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    let snapshot = state.snapshots.borrow().clone();
    let mut text = metrics::render(&snapshot);
    metrics::render_http(
        &mut text,
        state.waiting.load(Ordering::Relaxed),
        state.exchanges.load(Ordering::Relaxed),
        &state.conns,
    );
    // Without an answer from the coordination Redis the fleet families are left out
    // (huntgate_fleet_coordination_up says why), never shown as zeros.
    if let Ok(views) = fleet_views(&state).await {
        render_metrics(&mut text, &views);
    }
    render_ends(&mut text, &state);
    if let Some(coordination) = &state.coordination {
        coordination.stats.render(&mut text);
    }
    state.mutations.render(&mut text);
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
