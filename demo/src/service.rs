//! The sample hunt service: a small game API behind Envoy.
//!
//! - `POST /hunts/{hunt}/join`: creates the hunter's session in Redis (a blob of
//!   `session_bytes`, so memory grows with hunters), a position and a leaderboard entry.
//! - `POST /hunts/{hunt}/move`: moves the hunter, scores a point, refreshes the session and
//!   produces one Kafka event.
//! - `GET /hunts/{hunt}/leaderboard`: the top 10.
//! - `POST /hunts/{hunt}/finish`: the hunter is done: their session state is deleted
//!   and the answer carries `x-huntgate-session: end`, so huntgate frees their slot at once.
//!
//! Sessions expire `session_ttl_s` after the hunter's last move (Redis `EX`). A consumer
//! group (`scorers`) drains the events at a bounded rate, so lag grows when too many play.
//! With `--hunt-config`, the legacy `hunt-config.yml` layer (see [`crate::legacy`]) throttles
//! every event of a hunt past its cap, as the Veltrix pods did.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::Message;
use redis::aio::MultiplexedConnection;
use serde_json::json;

use crate::legacy::{HuntConfig, LegacyCap, Verdict};

/// Header carrying the hunter identity (as in the filter's default).
pub const HUNTER_HEADER: &str = "x-veltrix-hunter";

/// Options of `huntgate-demo service`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:10001")]
    pub listen: SocketAddr,
    /// Redis URL.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis: String,
    /// Kafka bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub kafka: String,
    /// Topic of the move events.
    #[arg(long, default_value = "hunt-001-events")]
    pub topic: String,
    /// Consumer group draining the events.
    #[arg(long, default_value = "hunt-001-scorers")]
    pub group: String,
    /// Events per second the consumer group processes.
    #[arg(long, default_value_t = 150)]
    pub scorer_rate: u64,
    /// Bytes of session state per hunter in Redis.
    #[arg(long, default_value_t = 8192)]
    pub session_bytes: usize,
    /// Seconds after the last move that a hunter's state expires.
    #[arg(long, default_value_t = 10)]
    pub session_ttl_s: u64,
    /// Enable the legacy layer with this `hunt-config.yml`.
    #[arg(long)]
    pub hunt_config: Option<PathBuf>,
}

struct AppState {
    redis: MultiplexedConnection,
    producer: ThreadedProducer<DefaultProducerContext>,
    topic: String,
    blob: Vec<u8>,
    ttl_s: u64,
    legacy: Option<Mutex<LegacyCap>>,
    started: Instant,
    moves: AtomicU64,
}

/// Runs the service until the process is stopped.
pub async fn run(args: ServiceArgs) -> anyhow::Result<()> {
    let legacy = match &args.hunt_config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let config =
                HuntConfig::parse(&text).with_context(|| format!("parsing {}", path.display()))?;
            Some(Mutex::new(LegacyCap::new(config)))
        }
        None => None,
    };
    let client = redis::Client::open(args.redis.as_str()).context("Redis URL")?;
    let redis = client
        .get_multiplexed_async_connection()
        .await
        .context("connecting to Redis")?;
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.kafka)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "100000")
        .set("message.timeout.ms", "30000")
        .create()
        .context("Kafka producer")?;
    let stop = Arc::new(AtomicBool::new(false));
    let scorer = {
        let (kafka, group, topic, rate, stop) = (
            args.kafka.clone(),
            args.group.clone(),
            args.topic.clone(),
            args.scorer_rate,
            stop.clone(),
        );
        std::thread::Builder::new()
            .name("scorer".into())
            .spawn(move || score(&kafka, &group, &topic, rate, &stop))
            .context("starting the scorer")?
    };
    let state = Arc::new(AppState {
        redis,
        producer,
        topic: args.topic.clone(),
        blob: vec![b'x'; args.session_bytes],
        ttl_s: args.session_ttl_s.max(1),
        legacy,
        started: Instant::now(),
        moves: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/hunts/{hunt}/join", post(join))
        .route("/hunts/{hunt}/move", post(do_move))
        .route("/hunts/{hunt}/leaderboard", get(leaderboard))
        .route("/hunts/{hunt}/finish", post(finish))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    stop.store(true, Ordering::Relaxed);
    let _ = scorer.join();
    served.context("HTTP server")
}

/// The consumer group: drains `topic` at most `rate` events per second and commits.
fn score(brokers: &str, group: &str, topic: &str, rate: u64, stop: &AtomicBool) {
    let consumer: BaseConsumer = match ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("scorer: {e}");
            return;
        }
    };
    let mut tpl = TopicPartitionList::new();
    let assigned = tpl
        .add_partition_offset(topic, 0, Offset::Beginning)
        .and_then(|()| consumer.assign(&tpl));
    if let Err(e) = assigned {
        eprintln!("scorer: assign: {e}");
        return;
    }
    let per_event = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let mut next_slot = Instant::now();
    let mut next_commit = Instant::now();
    let mut uncommitted: Option<i64> = None;
    while !stop.load(Ordering::Relaxed) {
        // Bounded throughput: one event per slot.
        let now = Instant::now();
        if next_slot > now {
            std::thread::sleep(next_slot - now);
        }
        // Never bank more than 10 slots of idle time.
        let floor = now.checked_sub(per_event.saturating_mul(10)).unwrap_or(now);
        next_slot = next_slot.max(floor) + per_event;
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            uncommitted = Some(message.offset() + 1);
        } else {
            // Nothing to do: don't bank the idle time.
            next_slot = Instant::now();
        }
        if next_commit <= Instant::now() {
            if let Some(offset) = uncommitted.take() {
                let mut commit = TopicPartitionList::new();
                if commit
                    .add_partition_offset(topic, 0, Offset::Offset(offset))
                    .is_ok()
                {
                    if let Err(e) = consumer.commit(&commit, CommitMode::Async) {
                        eprintln!("scorer: commit: {e}");
                    }
                }
            }
            next_commit = Instant::now() + Duration::from_millis(250);
        }
    }
}

fn reply(status: StatusCode, body: serde_json::Value, retry_after_s: Option<u64>) -> Response {
    let mut response = (status, Json(body)).into_response();
    if let Some(s) = retry_after_s {
        if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
            response.headers_mut().insert("retry-after", v);
        }
    }
    response
}

fn hunter_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get(HUNTER_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 256)
        .map(str::to_string)
}

/// Identifies the hunter and applies the legacy layer; `Err` is the reply.
fn admit(state: &AppState, hunt: &str, headers: &HeaderMap) -> Result<String, Box<Response>> {
    let Some(hunter) = hunter_of(headers) else {
        return Err(Box::new(reply(
            StatusCode::UNAUTHORIZED,
            json!({"error": "hunter_required", "hunt": hunt}),
            None,
        )));
    };
    if let Some(legacy) = &state.legacy {
        let now_ms = state.started.elapsed().as_millis() as u64;
        let mut cap = legacy.lock().unwrap_or_else(|e| e.into_inner());
        if let Verdict::Throttle { sessions } = cap.observe(&hunter, now_ms) {
            let retry = cap.config().retry_after_s;
            return Err(Box::new(reply(
                StatusCode::TOO_MANY_REQUESTS,
                json!({"error": "too_many_requests", "hunt": hunt, "sessions": sessions,
                       "max_concurrent_hunters": cap.config().max_concurrent_hunters}),
                Some(retry),
            )));
        }
    }
    Ok(hunter)
}

fn store_failed(hunt: &str, e: &redis::RedisError) -> Response {
    reply(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"error": "store_unavailable", "hunt": hunt, "detail": e.to_string()}),
        Some(2),
    )
}

async fn join(
    State(state): State<Arc<AppState>>,
    Path(hunt): Path<String>,
    headers: HeaderMap,
) -> Response {
    let hunter = match admit(&state, &hunt, &headers) {
        Ok(h) => h,
        Err(r) => return *r,
    };
    let mut conn = state.redis.clone();
    let result: redis::RedisResult<()> = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg(format!("session:{hunt}:{hunter}"))
        .arg(&state.blob)
        .arg("EX")
        .arg(state.ttl_s)
        .ignore()
        .cmd("SET")
        .arg(format!("pos:{hunt}:{hunter}"))
        .arg("0,0")
        .arg("EX")
        .arg(state.ttl_s)
        .ignore()
        .cmd("ZADD")
        .arg(format!("leaderboard:{hunt}"))
        .arg("NX")
        .arg(0)
        .arg(&hunter)
        .ignore()
        .query_async(&mut conn)
        .await;
    match result {
        Ok(()) => reply(
            StatusCode::OK,
            json!({"hunt": hunt, "hunter": hunter, "position": [0, 0]}),
            None,
        ),
        Err(e) => store_failed(&hunt, &e),
    }
}

/// The response header by which the service ends the hunter's huntgate session
/// (the demo's huntgate `session_end.header`; the filter never passes it to the client).
pub const SESSION_END_HEADER: &str = "x-huntgate-session";

/// A hunter finished: their state goes, and huntgate's session with it.
async fn finish(
    State(state): State<Arc<AppState>>,
    Path(hunt): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(hunter) = hunter_of(&headers) else {
        return reply(
            StatusCode::UNAUTHORIZED,
            json!({"error": "hunter_required", "hunt": hunt}),
            None,
        );
    };
    let mut conn = state.redis.clone();
    let result: redis::RedisResult<()> = redis::cmd("DEL")
        .arg(format!("session:{hunt}:{hunter}"))
        .arg(format!("pos:{hunt}:{hunter}"))
        .query_async(&mut conn)
        .await;
    if let Err(e) = result {
        return store_failed(&hunt, &e);
    }
    let mut response = reply(
        StatusCode::OK,
        json!({"hunt": hunt, "hunter": hunter, "finished": true}),
        None,
    );
    response
        .headers_mut()
        .insert(SESSION_END_HEADER, HeaderValue::from_static("end"));
    response
}

async fn do_move(
    State(state): State<Arc<AppState>>,
    Path(hunt): Path<String>,
    headers: HeaderMap,
) -> Response {
    let hunter = match admit(&state, &hunt, &headers) {
        Ok(h) => h,
        Err(r) => return *r,
    };
    let n = state.moves.fetch_add(1, Ordering::Relaxed);
    let (x, y) = (
        crate::ramp::splitmix(n) % 100,
        crate::ramp::splitmix(n + 1) % 100,
    );
    let mut conn = state.redis.clone();
    let result: redis::RedisResult<(i64,)> = redis::pipe()
        .cmd("EXPIRE")
        .arg(format!("session:{hunt}:{hunter}"))
        .arg(state.ttl_s)
        .cmd("SET")
        .arg(format!("pos:{hunt}:{hunter}"))
        .arg(format!("{x},{y}"))
        .arg("EX")
        .arg(state.ttl_s)
        .ignore()
        .cmd("ZINCRBY")
        .arg(format!("leaderboard:{hunt}"))
        .arg(1)
        .arg(&hunter)
        .ignore()
        .query_async(&mut conn)
        .await;
    match result {
        Ok((0,)) => {
            return reply(
                StatusCode::CONFLICT,
                json!({"error": "session_expired", "hunt": hunt, "hunter": hunter}),
                None,
            )
        }
        Ok(_) => {}
        Err(e) => return store_failed(&hunt, &e),
    }
    let now_ms = state.started.elapsed().as_millis() as u64;
    let event = json!({"hunt": hunt, "hunter": hunter, "x": x, "y": y, "t_ms": now_ms}).to_string();
    let record = BaseRecord::to(&state.topic).key(&hunter).payload(&event);
    if let Err((e, _)) = state.producer.send(record) {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "events_unavailable", "hunt": hunt, "detail": e.to_string()}),
            Some(2),
        );
    }
    reply(
        StatusCode::OK,
        json!({"hunt": hunt, "hunter": hunter, "position": [x, y]}),
        None,
    )
}

async fn leaderboard(
    State(state): State<Arc<AppState>>,
    Path(hunt): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&state, &hunt, &headers) {
        return *r;
    }
    let mut conn = state.redis.clone();
    let result: redis::RedisResult<Vec<(String, f64)>> = redis::cmd("ZREVRANGE")
        .arg(format!("leaderboard:{hunt}"))
        .arg(0)
        .arg(9)
        .arg("WITHSCORES")
        .query_async(&mut conn)
        .await;
    match result {
        Ok(top) => {
            let top: Vec<_> = top
                .into_iter()
                .map(|(hunter, score)| json!({"hunter": hunter, "score": score}))
                .collect();
            reply(StatusCode::OK, json!({"hunt": hunt, "top": top}), None)
        }
        Err(e) => store_failed(&hunt, &e),
    }
}
