//! The coordination Redis (`--coordination redis://…`): where two or more governor
//! replicas keep **one** lease allocation, so that together they never grant more than a
//! hunt's fleet limit.
//!
//! Each hunt's [`SharedHunt`] is one key, `huntgate:{fleet}:hunt:<hunt id>`, written as
//! `<revision> <JSON>` with an expiry of one lease window plus a second (every lease it
//! holds has ended by then). `huntgate:{fleet}:meta` holds the end of the learning period of
//! the state (no expiry): when it is missing (a new or emptied Redis) the state is new, and
//! grants add no capacity for `learning_ms`, exactly as after a restart without
//! coordination. All keys share the hash tag `{fleet}`, so one Redis Cluster slot holds them.
//!
//! An exchange reads the meta key and every governed hunt's key (`MGET`), runs the pure
//! allocator ([`grant_all`]) and writes the result back with a Lua script that first checks
//! that no key changed since the read (compare-and-set on the revisions); on a conflict it
//! reads again (at most [`MAX_ATTEMPTS`] times). A replica runs one exchange at a time.
//!
//! Nothing waits on this Redis for long: an exchange, a `/v1/fleet` or the fleet part of
//! `/metrics` gives up after [`BUDGET`] (connecting, queueing and every round trip
//! included). A failed exchange answers 503: the proxy keeps the shares of its last lease
//! until the lease ends, then falls back to its `safe_share`; no request of a hunter ever
//! waits on the governor or on Redis. The Redis must not evict keys (`maxmemory-policy
//! noeviction`): a hunt key evicted early would forget leases still in force.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;

use crate::clock::Millis;
use crate::document::ThrottleDocument;
use huntgate_core::lease::{key_hex, parse_key_hex};

use crate::fleet::ends::{retain_ms, EndsSince, MAX_ENDS_PER_ANSWER, MAX_FLEET_ENDS};
use crate::fleet::exchange::{grant_all, limits, LeaseAnswer, ValidReport};
use crate::fleet::shared::SharedHunt;
use crate::fleet::{AllocatorConfig, Fleet, HuntAllocation, HuntView};

/// Longest an operation on the coordination Redis may take, all included.
pub const BUDGET: Duration = Duration::from_millis(750);
/// Reads and compare-and-sets tried per exchange before it answers 503.
pub const MAX_ATTEMPTS: usize = 8;
/// Extra life of a hunt key beyond the lease window.
const KEY_SLACK_MS: Millis = 1_000;
/// Stands for "no such key" in the compare-and-set (a revision is digits only).
const MISSING: &str = "-";

const META_KEY: &str = "huntgate:{fleet}:meta";
/// The fleet's ended sessions: a stream of `k` (hunter key, 16 hex digits), `e` (ended at
/// ms), `o` (the reporting process, [`crate::fleet::ends::origin_of`], hex) and `t` (when
/// the replica logged it, on its clock), trimmed to about [`MAX_FLEET_ENDS`] entries; an
/// entry logged longer ago than the *reading* proxy's session TTL + 2 s is skipped (a
/// ticket it honours lives at most its TTL from now; the replicas' clocks, never Redis's,
/// decide). Its entry ids are the cursors proxies resume from (an exclusive `XRANGE`
/// start: Redis 6.2 or later).
const ENDS_KEY: &str = "huntgate:{fleet}:ends";

fn hunt_key(hunt: &str) -> String {
    format!("huntgate:{{fleet}}:hunt:{hunt}")
}

/// Compare-and-set over the meta key and the hunt keys. KEYS[1] meta, KEYS[2..] hunts;
/// ARGV[1] the meta token read (`-`: none), ARGV[2] the meta value to create when none,
/// ARGV[3] the hunt keys' expiry (ms), then per hunt j: ARGV[2 + 2j] the token read,
/// ARGV[3 + 2j] the new value. A token is the value up to its first space (the revision),
/// the whole value when it has none. Returns 1 if written, 0 if anything changed.
const CAS_SCRIPT: &str = r"
local function token(v)
  if not v then return '-' end
  local i = string.find(v, ' ', 1, true)
  if i then return string.sub(v, 1, i - 1) end
  return v
end
if token(redis.call('GET', KEYS[1])) ~= ARGV[1] then return 0 end
for j = 1, #KEYS - 1 do
  if token(redis.call('GET', KEYS[j + 1])) ~= ARGV[2 + 2 * j] then return 0 end
end
if ARGV[1] == '-' then redis.call('SET', KEYS[1], ARGV[2]) end
for j = 1, #KEYS - 1 do
  redis.call('SET', KEYS[j + 1], ARGV[3 + 2 * j], 'PX', ARGV[3])
end
return 1
";

/// The key of the operator state (overrides, started and ended hunts, audit log; see
/// [`crate::operator::store`]), written as `<revision> <JSON>`, without expiry.
const OPERATOR_KEY: &str = "huntgate:{fleet}:operator";

/// Compare-and-set of the operator state: KEYS[1] the key, ARGV[1] the token read (`-`:
/// none), ARGV[2] the new value. Returns 1 if written, 0 if the key changed since the read.
const OPERATOR_SCRIPT: &str = r"
local v = redis.call('GET', KEYS[1])
local t = '-'
if v then
  local i = string.find(v, ' ', 1, true)
  if i then t = string.sub(v, 1, i - 1) else t = v end
end
if t ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
";

/// The script's token of a stored value (see [`CAS_SCRIPT`]).
fn token(value: Option<&str>) -> &str {
    match value {
        None => MISSING,
        Some(v) => v.split_once(' ').map_or(v, |(t, _)| t),
    }
}

/// Why a coordinated operation failed (the proxy keeps its lease; see the module docs).
#[derive(Debug, thiserror::Error)]
pub enum CoordinationError {
    /// The Redis could not be reached or answered with an error.
    #[error("coordination Redis: {0}")]
    Redis(String),
    /// The operation did not finish within [`BUDGET`].
    #[error("coordination Redis: no answer within {} ms", BUDGET.as_millis())]
    Timeout,
    /// Other replicas changed the state at every attempt.
    #[error("coordination Redis: state changed by other replicas {MAX_ATTEMPTS} times in a row")]
    Contended,
    /// The meta key holds something this governor did not write.
    #[error("coordination Redis: `{META_KEY}` is not a number")]
    CorruptMeta,
}

/// Counters of the coordination, for `/metrics`.
#[derive(Debug, Default)]
pub struct CoordinationStats {
    /// Whether the latest operation succeeded.
    pub up: AtomicBool,
    /// Operations that failed (each answered 503 or left a metric out).
    pub errors: AtomicU64,
    /// Compare-and-sets lost to another replica (each retried).
    pub conflicts: AtomicU64,
    /// Stored hunt values that did not parse (each restarted as a learning hunt).
    pub corrupt: AtomicU64,
}

impl CoordinationStats {
    /// Prometheus lines of the coordination Redis: reachable, failed operations, lost
    /// compare-and-sets, unreadable hunt states.
    pub fn render(&self, out: &mut String) {
        use std::sync::atomic::Ordering::Relaxed;
        let families: [(&str, &str, &str, u64); 4] = [
            (
                "huntgate_fleet_coordination_up",
                "gauge",
                "1 if the latest operation on the coordination Redis succeeded.",
                u64::from(self.up.load(Relaxed)),
            ),
            (
                "huntgate_fleet_coordination_errors_total",
                "counter",
                "Operations on the coordination Redis that failed or timed out (exchanges answered 503).",
                self.errors.load(Relaxed),
            ),
            (
                "huntgate_fleet_coordination_conflicts_total",
                "counter",
                "Compare-and-sets lost to another replica (each retried).",
                self.conflicts.load(Relaxed),
            ),
            (
                "huntgate_fleet_coordination_corrupt_total",
                "counter",
                "Stored hunt states that did not parse (each relearned).",
                self.corrupt.load(Relaxed),
            ),
        ];
        let mut o = crate::metrics::Out(std::mem::take(out));
        for (name, kind, help, value) in families {
            o.family(name, kind, help);
            o.sample(name, &[], value as f64);
        }
        *out = o.0;
    }
}

/// One entry of the ends stream as `XRANGE` returns it: its id, then field, value, ….
type StreamEntry = (String, Vec<String>);

/// Whether `id` reads as a stream entry id (`<ms>-<seq>`).
fn is_stream_id(id: &str) -> bool {
    id.split_once('-').is_some_and(|(ms, seq)| {
        !ms.is_empty()
            && !seq.is_empty()
            && ms.len() <= 20
            && seq.len() <= 20
            && ms.bytes().chain(seq.bytes()).all(|b| b.is_ascii_digit())
    })
}

/// A replica's handle on the coordination Redis.
pub struct Coordination {
    client: redis::Client,
    /// The connection, kept between operations; the lock also makes this replica run one
    /// operation at a time (its own exchanges never conflict with each other).
    conn: Mutex<Option<redis::aio::MultiplexedConnection>>,
    replica: String,
    /// Counters for `/metrics`.
    pub stats: CoordinationStats,
}

impl Coordination {
    /// A handle on `url` for the replica named `replica` (connects at the first use).
    pub fn new(url: &str, replica: &str) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("--coordination: {e}"))?;
        Ok(Self {
            client,
            conn: Mutex::new(None),
            replica: replica.to_owned(),
            stats: CoordinationStats::default(),
        })
    }

    /// This replica's id (the key of its limit in each hunt's state).
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// One proxy's exchange against the shared state: its shares of every hunt `document`
    /// governs.
    pub async fn exchange(
        &self,
        document: &ThrottleDocument,
        report: &ValidReport,
        now_ms: Millis,
        config: &AllocatorConfig,
    ) -> Result<LeaseAnswer, CoordinationError> {
        let hunts: Vec<(&str, u32)> = limits(document).collect();
        self.bounded(async {
            let mut guard = self.conn.lock().await;
            for _ in 0..MAX_ATTEMPTS {
                let conn = self.connection(&mut guard).await?;
                match self.attempt(conn, &hunts, report, now_ms, config).await {
                    Ok(Some(answer)) => return Ok(answer),
                    Ok(None) => {
                        self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        *guard = None;
                        return Err(e);
                    }
                }
            }
            Err(CoordinationError::Contended)
        })
        .await
    }

    /// Appends the report's ends to the shared stream and reads the others' ends after its
    /// cursor (at most [`MAX_ENDS_PER_ANSWER`] entries read): what every replica answers
    /// alike, whichever one a proxy's exchanges reach.
    pub async fn exchange_ends(
        &self,
        report: &ValidReport,
        now_ms: Millis,
    ) -> Result<EndsSince, CoordinationError> {
        let origin = format!("{:x}", report.origin());
        let oldest = now_ms.saturating_sub(retain_ms(report.session_ttl_ms));
        let now = now_ms.to_string();
        let start = match report.ends_after.as_deref() {
            Some(id) if is_stream_id(id) => format!("({id}"),
            _ => "-".to_owned(),
        };
        self.bounded(async {
            let mut guard = self.conn.lock().await;
            let conn = self.connection(&mut guard).await?;
            let mut pipe = redis::pipe();
            for (key, ended_ms) in &report.ends {
                pipe.cmd("XADD")
                    .arg(ENDS_KEY)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(MAX_FLEET_ENDS)
                    .arg("*")
                    .arg("k")
                    .arg(key_hex(*key))
                    .arg("e")
                    .arg(ended_ms)
                    .arg("o")
                    .arg(&origin)
                    .arg("t")
                    .arg(&now)
                    .ignore();
            }
            pipe.cmd("XRANGE")
                .arg(ENDS_KEY)
                .arg(&start)
                .arg("+")
                .arg("COUNT")
                .arg(MAX_ENDS_PER_ANSWER);
            let read: Result<(Vec<StreamEntry>,), _> = pipe.query_async(conn).await;
            let (entries,) = read.map_err(|e| {
                *guard = None;
                CoordinationError::Redis(e.to_string())
            })?;
            let mut since = EndsSince {
                sessions: Vec::with_capacity(entries.len()),
                cursor: report
                    .ends_after
                    .clone()
                    .filter(|id| is_stream_id(id))
                    .unwrap_or_else(|| "0-0".to_owned()),
            };
            for (id, fields) in entries {
                let field = |name: &str| {
                    fields
                        .chunks_exact(2)
                        .find(|pair| pair.first().is_some_and(|f| f == name))
                        .and_then(|pair| pair.get(1))
                        .map(String::as_str)
                };
                let key = field("k").and_then(parse_key_hex);
                let ended_ms = field("e").and_then(|e| e.parse::<u64>().ok());
                let logged_ms = field("t").and_then(|t| t.parse::<u64>().ok());
                if let (Some(key), Some(ended_ms), Some(logged_ms)) = (key, ended_ms, logged_ms) {
                    if field("o") != Some(origin.as_str()) && logged_ms >= oldest {
                        since.sessions.push((key, ended_ms));
                    }
                } else {
                    self.stats.corrupt.fetch_add(1, Ordering::Relaxed);
                }
                since.cursor = id;
            }
            Ok(since)
        })
        .await
    }

    /// Every governed hunt's allocation as stored, for `/v1/fleet` and `/metrics`.
    pub async fn view(
        &self,
        document: &ThrottleDocument,
        now_ms: Millis,
        config: &AllocatorConfig,
    ) -> Result<BTreeMap<String, HuntView>, CoordinationError> {
        let hunts: Vec<&str> = document.hunts.keys().map(String::as_str).collect();
        self.bounded(async {
            let mut guard = self.conn.lock().await;
            let conn = self.connection(&mut guard).await?;
            let stored = match read(conn, &hunts).await {
                Ok((_, stored)) => stored,
                Err(e) => {
                    *guard = None;
                    return Err(e);
                }
            };
            let mut views = BTreeMap::new();
            for (hunt, value) in hunts.iter().zip(stored) {
                let Some(Ok(shared)) = value.as_deref().map(SharedHunt::decode) else {
                    continue;
                };
                let view = shared.allocation.view(now_ms, config);
                if view.proxies_known > 0 {
                    views.insert((*hunt).to_owned(), view);
                }
            }
            Ok(views)
        })
        .await
    }

    /// The stored operator state (`<revision> <JSON>`), if any.
    pub async fn load_operator(&self) -> Result<Option<String>, CoordinationError> {
        self.bounded(async {
            let mut guard = self.conn.lock().await;
            let conn = self.connection(&mut guard).await?;
            let got: Result<Option<String>, _> =
                redis::cmd("GET").arg(OPERATOR_KEY).query_async(conn).await;
            got.map_err(|e| {
                *guard = None;
                CoordinationError::Redis(e.to_string())
            })
        })
        .await
    }

    /// Writes the operator state `value` (`<revision> <JSON>`) if the stored one still has
    /// the revision `expected` (`None`: nothing stored); `false` if another replica wrote
    /// first.
    pub async fn store_operator(
        &self,
        expected: Option<u64>,
        value: &str,
    ) -> Result<bool, CoordinationError> {
        let expected = expected.map_or_else(|| MISSING.to_owned(), |r| r.to_string());
        self.bounded(async {
            let mut guard = self.conn.lock().await;
            let conn = self.connection(&mut guard).await?;
            let written: Result<i64, _> = redis::cmd("EVAL")
                .arg(OPERATOR_SCRIPT)
                .arg(1)
                .arg(OPERATOR_KEY)
                .arg(&expected)
                .arg(value)
                .query_async(conn)
                .await;
            match written {
                Ok(n) => Ok(n == 1),
                Err(e) => {
                    *guard = None;
                    Err(CoordinationError::Redis(e.to_string()))
                }
            }
        })
        .await
    }

    /// Runs `operation` within [`BUDGET`] and records its outcome.
    async fn bounded<T>(
        &self,
        operation: impl std::future::Future<Output = Result<T, CoordinationError>>,
    ) -> Result<T, CoordinationError> {
        let result = tokio::time::timeout(BUDGET, operation)
            .await
            .unwrap_or(Err(CoordinationError::Timeout));
        let was_up = self.stats.up.swap(result.is_ok(), Ordering::Relaxed);
        match &result {
            Ok(_) if !was_up => tracing::info!("coordination Redis reachable"),
            Err(e) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                if was_up {
                    tracing::warn!(error = %e, "coordination Redis failing: lease exchanges answer 503, proxies keep their leases until they end");
                }
            }
            Ok(_) => {}
        }
        result
    }

    async fn connection<'g>(
        &self,
        guard: &'g mut Option<redis::aio::MultiplexedConnection>,
    ) -> Result<&'g mut redis::aio::MultiplexedConnection, CoordinationError> {
        if guard.is_none() {
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(BUDGET))
                .set_response_timeout(Some(BUDGET));
            let conn = self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|e| CoordinationError::Redis(e.to_string()))?;
            *guard = Some(conn);
        }
        guard
            .as_mut()
            .ok_or_else(|| CoordinationError::Redis("no connection".into()))
    }

    /// One read–allocate–compare-and-set round; `None` when another replica wrote first.
    async fn attempt(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        hunts: &[(&str, u32)],
        report: &ValidReport,
        now_ms: Millis,
        config: &AllocatorConfig,
    ) -> Result<Option<LeaseAnswer>, CoordinationError> {
        let ids: Vec<&str> = hunts.iter().map(|(hunt, _)| *hunt).collect();
        let (meta, stored) = read(conn, &ids).await?;
        let learning_until_ms = match meta.as_deref() {
            Some(v) => v
                .parse::<Millis>()
                .map_err(|_| CoordinationError::CorruptMeta)?,
            None => now_ms.saturating_add(config.learning_ms),
        };
        let window_ms = config.window_ms();
        let mut fleet = Fleet {
            learning_until_ms,
            hunts: BTreeMap::new(),
        };
        let mut shared = Vec::with_capacity(hunts.len());
        let mut limits = Vec::with_capacity(hunts.len());
        for ((hunt, limit), value) in hunts.iter().zip(&stored) {
            let mut entry = match value.as_deref().map(SharedHunt::decode) {
                None => SharedHunt::new(learning_until_ms),
                Some(Ok(entry)) => entry,
                Some(Err(e)) => {
                    // Whatever leases it held are unknown: learn them again.
                    self.stats.corrupt.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(hunt, error = %e, "coordination Redis: unreadable hunt state, relearning it");
                    let mut fresh = SharedHunt::new(now_ms.saturating_add(config.learning_ms));
                    fresh.rev = 1;
                    fresh
                }
            };
            limits.push(entry.effective_limit(&self.replica, *limit, now_ms, window_ms));
            let allocation = std::mem::take(&mut entry.allocation);
            fleet.hunts.insert((*hunt).to_owned(), allocation);
            shared.push(entry);
        }
        let answer = grant_all(
            &mut fleet,
            report,
            ids.iter().copied().zip(limits),
            now_ms,
            config,
        );
        let mut script = redis::cmd("EVAL");
        script.arg(CAS_SCRIPT).arg(1 + hunts.len()).arg(META_KEY);
        for hunt in &ids {
            script.arg(hunt_key(hunt));
        }
        script
            .arg(token(meta.as_deref()))
            .arg(learning_until_ms.to_string())
            .arg(window_ms.saturating_add(KEY_SLACK_MS));
        for ((hunt, mut entry), value) in ids.iter().zip(shared).zip(&stored) {
            entry.allocation = fleet
                .hunts
                .remove(*hunt)
                .unwrap_or_else(|| HuntAllocation::new(learning_until_ms));
            entry.rev = entry.rev.wrapping_add(1);
            script.arg(token(value.as_deref())).arg(entry.encode());
        }
        let written: i64 = script
            .query_async(conn)
            .await
            .map_err(|e| CoordinationError::Redis(e.to_string()))?;
        Ok((written == 1).then_some(answer))
    }
}

/// The meta value and each hunt's stored value, in one `MGET`.
async fn read(
    conn: &mut redis::aio::MultiplexedConnection,
    hunts: &[&str],
) -> Result<(Option<String>, Vec<Option<String>>), CoordinationError> {
    let mut mget = redis::cmd("MGET");
    mget.arg(META_KEY);
    for hunt in hunts {
        mget.arg(hunt_key(hunt));
    }
    let mut values: Vec<Option<String>> = mget
        .query_async(conn)
        .await
        .map_err(|e| CoordinationError::Redis(e.to_string()))?;
    if values.len() != hunts.len() + 1 {
        return Err(CoordinationError::Redis(format!(
            "MGET answered {} values for {} keys",
            values.len(),
            hunts.len() + 1
        )));
    }
    let stored = values.split_off(1);
    let meta = values.pop().flatten();
    Ok((meta, stored))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_what_the_script_compares() {
        assert_eq!(token(None), MISSING);
        assert_eq!(token(Some("12 {\"rev\":12}")), "12");
        assert_eq!(token(Some("1733000000000")), "1733000000000");
        assert_eq!(token(Some("garbage\twith tab")), "garbage\twith");
    }
}
