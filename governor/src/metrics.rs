//! `/metrics`: metric names (one place) and the Prometheus text rendering of a [`Snapshot`].
//!
//! Label sets are bounded: `hunt` by the policy cap [`crate::policy::MAX_HUNTS`], `signal`
//! by [`crate::policy::MAX_SIGNALS`], `reason` by the six reasons, `result` by two values.
//! Series of hunts or signals that leave the policy disappear at once (the text is rendered
//! from the snapshot, not accumulated).

use std::fmt::Write as _;

use std::sync::atomic::Ordering;

use crate::governor::Snapshot;
use crate::law::Reason;
use crate::listener::ConnStats;
use crate::signal::ErrorCause;

/// Gauge{hunt}: the throttle ratio in force.
pub const HUNT_THROTTLE_RATIO: &str = "veltrix_hunt_throttle_ratio";
/// Gauge{hunt}: the hunt's max_hunters.
pub const HUNT_MAX_HUNTERS: &str = "veltrix_hunt_max_hunters";
/// Gauge{hunt}: the enforced limit, floor(max_hunters × ratio).
pub const HUNT_LIMIT: &str = "veltrix_hunt_limit";
/// Gauge{hunt, reason}: 1 for the reason of the hunt's current ratio.
pub const HUNT_REASON: &str = "huntgate_hunt_reason";
/// Gauge: the ratio for hunts without a policy file.
pub const DEFAULT_RATIO: &str = "huntgate_default_throttle_ratio";
/// Gauge: the throttle document's version.
pub const DOCUMENT_VERSION: &str = "huntgate_throttle_document_version";
/// Gauge: when the document was generated (seconds since the epoch).
pub const DOCUMENT_GENERATED: &str = "huntgate_throttle_document_generated_timestamp_seconds";
/// Gauge{signal}: the last value read (Redis: memory fraction; Kafka: lag in messages).
pub const SIGNAL_VALUE: &str = "huntgate_signal_value";
/// Gauge{signal}: 1 if the latest read succeeded.
pub const SIGNAL_UP: &str = "huntgate_signal_up";
/// Gauge{signal}: 1 if the signal is stale (no good read within stale_after_s).
pub const SIGNAL_STALE: &str = "huntgate_signal_stale";
/// Gauge{signal}: seconds since the last good read.
pub const SIGNAL_AGE: &str = "huntgate_signal_age_seconds";
/// Counter{signal}: failed reads.
pub const SIGNAL_READ_ERRORS: &str = "huntgate_signal_read_errors_total";
/// Counter{reason}: per-hunt decisions (one per governed hunt, plus the default, per evaluation).
pub const DECISIONS: &str = "huntgate_decisions_total";
/// Counter{reason}: decisions that changed a ratio.
pub const RATIO_CHANGES: &str = "huntgate_ratio_changes_total";
/// Counter: evaluations of the control law.
pub const EVALUATIONS: &str = "huntgate_evaluations_total";
/// Counter{result="success"|"failure"}: policy loads.
pub const POLICY_RELOADS: &str = "huntgate_policy_reloads_total";
/// Gauge: 1 if the latest policy load succeeded, 0 if it was rejected (the last good
/// policy is then still in force).
pub const POLICY_LAST_RELOAD_OK: &str = "huntgate_policy_last_reload_ok";
/// Gauge: hunts in the policy in force.
pub const POLICY_HUNTS: &str = "huntgate_policy_hunts";
/// Gauge: 1 once a policy is loaded and an evaluation has run.
pub const READY: &str = "huntgate_ready";

/// Gauge{signal, cause}: 1 for the cause of a failing signal's latest read error (`cause`
/// ∈ connect, timeout, protocol, config, bad_value); no series while the signal is up.
pub const SIGNAL_ERROR_CAUSE: &str = "huntgate_signal_error_cause";
/// Counter{result="success"|"failure"}: writes of the state file (`--state-dir`).
pub const STATE_SAVES: &str = "huntgate_state_saves_total";
/// Gauge: files in the policy directory that were ignored (wrong name or a sub-folder).
pub const POLICY_IGNORED_FILES: &str = "huntgate_policy_ignored_files";

/// Gauge: overrides in force (set through the gRPC API, not lapsed).
pub const OPERATOR_OVERRIDES: &str = "huntgate_operator_overrides";
/// Gauge: hunts started through the gRPC API without a policy file.
pub const OPERATOR_STARTED: &str = "huntgate_operator_started_hunts";
/// Gauge: hunts with a policy file ended through the gRPC API.
pub const OPERATOR_ENDED: &str = "huntgate_operator_ended_hunts";
/// Counter{result="applied"|"refused"|"failed"|"denied"}: gRPC mutations by outcome
/// (rendered from [`crate::grpc::MutationStats`]).
pub const OPERATOR_MUTATIONS: &str = "huntgate_operator_mutations_total";

/// Gauge: long-polls of `/v1/throttle` waiting for a new version right now.
pub const LONG_POLLS_WAITING: &str = "huntgate_long_polls_waiting";
/// Gauge{pool="api"|"probe"}: HTTP connections open now.
pub const HTTP_CONNECTIONS: &str = "huntgate_http_connections";
/// Counter: connections refused because every API and probe slot was taken.
pub const HTTP_CONNECTIONS_REJECTED: &str = "huntgate_http_connections_rejected_total";
/// Counter: connections closed by the header-read, idle or write timeout.
pub const HTTP_CONNECTIONS_TIMED_OUT: &str = "huntgate_http_connections_timed_out_total";

/// Content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Escapes a label value (backslash, double quote, newline).
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Formats a sample value (`+Inf`, `-Inf`, `NaN` as Prometheus spells them).
pub fn value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// Prometheus text being written: `family` lines, then its `sample`s.
pub struct Out(pub String);

impl Out {
    /// The `# HELP` and `# TYPE` lines of a family.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    /// One sample line (label values escaped).
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape_label(val));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {}", value(v));
    }
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// Renders the Prometheus text exposition of a snapshot.
pub fn render(s: &Snapshot) -> String {
    let mut o = Out(String::with_capacity(4096));
    let doc = &s.document;

    o.family(
        HUNT_THROTTLE_RATIO,
        "gauge",
        "Throttle ratio in force per governed hunt (multiplier of max_hunters).",
    );
    for (hunt, e) in &doc.hunts {
        o.sample(HUNT_THROTTLE_RATIO, &[("hunt", hunt)], e.ratio);
    }
    o.family(HUNT_MAX_HUNTERS, "gauge", "max_hunters per governed hunt.");
    for (hunt, e) in &doc.hunts {
        o.sample(
            HUNT_MAX_HUNTERS,
            &[("hunt", hunt)],
            f64::from(e.max_hunters),
        );
    }
    o.family(
        HUNT_LIMIT,
        "gauge",
        "Enforced limit per governed hunt: floor(max_hunters x ratio).",
    );
    for (hunt, e) in &doc.hunts {
        o.sample(HUNT_LIMIT, &[("hunt", hunt)], f64::from(e.limit));
    }
    o.family(
        HUNT_REASON,
        "gauge",
        "1 for the reason of each governed hunt's current ratio.",
    );
    for (hunt, e) in &doc.hunts {
        o.sample(
            HUNT_REASON,
            &[("hunt", hunt), ("reason", e.reason.as_str())],
            1.0,
        );
    }
    o.family(
        DEFAULT_RATIO,
        "gauge",
        "Throttle ratio for hunts without a policy file.",
    );
    o.sample(DEFAULT_RATIO, &[], doc.default_ratio);
    o.family(
        DOCUMENT_VERSION,
        "gauge",
        "Version of the throttle document.",
    );
    o.sample(DOCUMENT_VERSION, &[], doc.version as f64);
    o.family(
        DOCUMENT_GENERATED,
        "gauge",
        "When the throttle document was generated, in seconds since the epoch.",
    );
    o.sample(DOCUMENT_GENERATED, &[], doc.generated_at_ms as f64 / 1000.0);

    o.family(SIGNAL_VALUE, "gauge", "Last value read per signal (redis: memory fraction of capacity; kafka: consumer lag in messages).");
    for r in &s.signals {
        // NaN until the first good read, so the series exists from start-up.
        let v = r.health.last_value.unwrap_or(f64::NAN);
        o.sample(SIGNAL_VALUE, &[("signal", &r.id.to_string())], v);
    }
    o.family(
        SIGNAL_UP,
        "gauge",
        "1 if the latest read of the signal succeeded.",
    );
    for r in &s.signals {
        o.sample(
            SIGNAL_UP,
            &[("signal", &r.id.to_string())],
            flag(r.health.up),
        );
    }
    o.family(
        SIGNAL_STALE,
        "gauge",
        "1 if the signal had no good read within stale_after_s.",
    );
    for r in &s.signals {
        o.sample(
            SIGNAL_STALE,
            &[("signal", &r.id.to_string())],
            flag(r.stale),
        );
    }
    o.family(
        SIGNAL_AGE,
        "gauge",
        "Seconds since the last good read of the signal (since it was bound, if never read).",
    );
    for r in &s.signals {
        o.sample(SIGNAL_AGE, &[("signal", &r.id.to_string())], r.age_s);
    }
    o.family(
        SIGNAL_ERROR_CAUSE,
        "gauge",
        "1 for the cause of the latest read error of a failing signal.",
    );
    for r in &s.signals {
        if let (false, Some(e)) = (r.health.up, &r.health.last_error) {
            let cause = ErrorCause::ALL
                .iter()
                .find(|c| **c == e.cause)
                .map_or("connect", |c| c.as_str());
            o.sample(
                SIGNAL_ERROR_CAUSE,
                &[("signal", &r.id.to_string()), ("cause", cause)],
                1.0,
            );
        }
    }
    o.family(SIGNAL_READ_ERRORS, "counter", "Failed reads per signal.");
    for r in &s.signals {
        o.sample(
            SIGNAL_READ_ERRORS,
            &[("signal", &r.id.to_string())],
            r.health.errors_total as f64,
        );
    }

    o.family(
        DECISIONS,
        "counter",
        "Control-law decisions by reason (one per governed hunt and the default, per evaluation).",
    );
    for reason in Reason::ALL {
        let n = s
            .counters
            .decisions
            .get(reason.index())
            .copied()
            .unwrap_or(0);
        o.sample(DECISIONS, &[("reason", reason.as_str())], n as f64);
    }
    o.family(
        RATIO_CHANGES,
        "counter",
        "Decisions that changed a ratio, by reason.",
    );
    for reason in Reason::ALL {
        let n = s
            .counters
            .ratio_changes
            .get(reason.index())
            .copied()
            .unwrap_or(0);
        o.sample(RATIO_CHANGES, &[("reason", reason.as_str())], n as f64);
    }
    o.family(EVALUATIONS, "counter", "Evaluations of the control law.");
    o.sample(EVALUATIONS, &[], s.counters.evaluations as f64);
    o.family(POLICY_RELOADS, "counter", "Policy loads by result.");
    o.sample(
        POLICY_RELOADS,
        &[("result", "success")],
        s.counters.reloads_ok as f64,
    );
    o.sample(
        POLICY_RELOADS,
        &[("result", "failure")],
        s.counters.reloads_failed as f64,
    );
    o.family(POLICY_LAST_RELOAD_OK, "gauge", "1 if the latest policy load succeeded; 0 if it was rejected and the last good policy stays in force.");
    o.sample(POLICY_LAST_RELOAD_OK, &[], flag(s.last_reload_ok));
    o.family(POLICY_HUNTS, "gauge", "Hunts in the policy in force.");
    o.sample(POLICY_HUNTS, &[], s.policy_hunts as f64);
    o.family(
        POLICY_IGNORED_FILES,
        "gauge",
        "Files in the policy directory that were ignored (wrong name or in a sub-folder).",
    );
    o.sample(POLICY_IGNORED_FILES, &[], s.ignored_files as f64);
    o.family(
        STATE_SAVES,
        "counter",
        "Writes of the saved control state, by result.",
    );
    o.sample(
        STATE_SAVES,
        &[("result", "success")],
        s.counters.state_saves_ok as f64,
    );
    o.sample(
        STATE_SAVES,
        &[("result", "failure")],
        s.counters.state_saves_failed as f64,
    );
    let now = s.document.generated_at_ms;
    let controls = s.operator.hunts.values();
    let live = controls
        .clone()
        .filter(|c| c.overrides.as_ref().is_some_and(|o| o.live(now)))
        .count();
    o.family(
        OPERATOR_OVERRIDES,
        "gauge",
        "Overrides in force (gRPC API).",
    );
    o.sample(OPERATOR_OVERRIDES, &[], live as f64);
    o.family(
        OPERATOR_STARTED,
        "gauge",
        "Hunts started through the gRPC API without a policy file.",
    );
    o.sample(
        OPERATOR_STARTED,
        &[],
        controls.clone().filter(|c| c.started.is_some()).count() as f64,
    );
    o.family(
        OPERATOR_ENDED,
        "gauge",
        "Hunts with a policy file ended through the gRPC API.",
    );
    o.sample(
        OPERATOR_ENDED,
        &[],
        controls.filter(|c| c.ended).count() as f64,
    );
    o.family(
        READY,
        "gauge",
        "1 once a policy is loaded and an evaluation has run.",
    );
    o.sample(READY, &[], flag(s.ready));
    o.0
}

/// Appends the HTTP side's own metrics (`lease_exchanges`: lease exchanges answered with
/// shares).
pub fn render_http(
    text: &mut String,
    long_polls_waiting: u64,
    lease_exchanges: u64,
    conns: &ConnStats,
) {
    let mut o = Out(std::mem::take(text));
    o.family(
        "huntgate_fleet_exchanges_total",
        "counter",
        "Lease exchanges this replica answered with shares.",
    );
    o.sample(
        "huntgate_fleet_exchanges_total",
        &[],
        lease_exchanges as f64,
    );
    o.family(
        LONG_POLLS_WAITING,
        "gauge",
        "Long-polls of /v1/throttle waiting for a new version.",
    );
    o.sample(LONG_POLLS_WAITING, &[], long_polls_waiting as f64);
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
    o.family(
        HTTP_CONNECTIONS,
        "gauge",
        "HTTP connections open, by pool (probe: the slots reserved past the API cap).",
    );
    o.sample(HTTP_CONNECTIONS, &[("pool", "api")], load(&conns.open_api));
    o.sample(
        HTTP_CONNECTIONS,
        &[("pool", "probe")],
        load(&conns.open_probe),
    );
    o.family(
        HTTP_CONNECTIONS_REJECTED,
        "counter",
        "Connections refused because every slot was taken.",
    );
    o.sample(HTTP_CONNECTIONS_REJECTED, &[], load(&conns.rejected));
    o.family(
        HTTP_CONNECTIONS_TIMED_OUT,
        "counter",
        "Connections closed by the header-read, idle or write timeout.",
    );
    o.sample(HTTP_CONNECTIONS_TIMED_OUT, &[], load(&conns.timed_out));
    *text = o.0;
}
