//! What `huntgatectl` prints: pure rendering of API messages for people (the `--json`
//! output is the messages themselves). The binary (`src/bin/huntgatectl.rs`) only parses
//! arguments, calls the API and prints these.

use std::fmt::Write as _;

use crate::grpc::pb;

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: any other failure (a local file, an unexpected answer).
pub const EXIT_FAILED: u8 = 1;
/// Exit status: the command line is wrong (clap's own).
pub const EXIT_USAGE: u8 = 2;
/// Exit status: the governor cannot be reached or is not ready (UNAVAILABLE, timeouts).
pub const EXIT_UNAVAILABLE: u8 = 3;
/// Exit status: no or a wrong token, or a read-only listener (UNAUTHENTICATED,
/// PERMISSION_DENIED).
pub const EXIT_AUTH: u8 = 4;
/// Exit status: the hunt is not governed (NOT_FOUND).
pub const EXIT_NOT_FOUND: u8 = 5;
/// Exit status: the governor refused the input (INVALID_ARGUMENT, RESOURCE_EXHAUSTED).
pub const EXIT_REFUSED: u8 = 6;

/// The exit status for a gRPC status code.
pub fn exit_code(code: tonic::Code) -> u8 {
    match code {
        tonic::Code::Ok => EXIT_OK,
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            EXIT_UNAVAILABLE
        }
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => EXIT_AUTH,
        tonic::Code::NotFound => EXIT_NOT_FOUND,
        tonic::Code::InvalidArgument
        | tonic::Code::ResourceExhausted
        | tonic::Code::FailedPrecondition
        | tonic::Code::OutOfRange => EXIT_REFUSED,
        _ => EXIT_FAILED,
    }
}

/// "12 s ago" / "in 5 min" for a time in ms since the epoch, seen at `now_ms`.
pub fn ago(at_ms: i64, now_ms: i64) -> String {
    let d = now_ms.saturating_sub(at_ms);
    let (abs, future) = (d.unsigned_abs() / 1000, d < 0);
    let text = match abs {
        0..=119 => format!("{abs} s"),
        120..=7199 => format!("{} min", abs / 60),
        _ => format!("{} h", abs / 3600),
    };
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// The mode's short name.
pub fn mode_name(mode: i32) -> &'static str {
    match pb::Mode::try_from(mode) {
        Ok(pb::Mode::Governed) => "governed",
        Ok(pb::Mode::Pinned) => "pinned",
        Ok(pb::Mode::Open) => "open",
        Ok(pb::Mode::Closed) => "closed",
        _ => "keep",
    }
}

/// One line about an override: `max 300, pinned 0.5 (ops: "spike", expires in 5 min)`.
pub fn override_line(o: &pb::Override, now_ms: i64) -> String {
    let mut parts = Vec::new();
    if let Some(m) = o.max_hunters {
        parts.push(format!("max {m}"));
    }
    if let Some(m) = o.min_hunters {
        parts.push(format!("min {m}"));
    }
    match (mode_name(o.mode), o.pin_ratio) {
        ("keep", Some(r)) | ("pinned", Some(r)) => parts.push(format!("pinned {r}")),
        ("keep", None) => {}
        (m, _) => parts.push(m.to_owned()),
    }
    let expiry = o
        .expires_at_ms
        .map(|t| format!(", expires {}", ago(t, now_ms)))
        .unwrap_or_default();
    format!(
        "{} (by {}, {}: \"{}\"{expiry})",
        parts.join(", "),
        o.by,
        ago(o.at_ms, now_ms),
        o.reason
    )
}

fn signal_cell(s: &pb::Signal) -> String {
    let value = s
        .value
        .map_or_else(|| "?".to_owned(), |v| format!("{}", round3(v)));
    let mark = match s.state.as_str() {
        "overloaded" => "!",
        "stale" => " stale",
        "pending" => " pending",
        _ => "",
    };
    format!("{}={value}{mark}", s.id)
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn shares_cell(f: &pb::Fleet) -> String {
    const SHOWN: usize = 3;
    let mut cells: Vec<String> = f
        .shares
        .iter()
        .take(SHOWN)
        .map(|p| {
            format!(
                "{}={}{}",
                p.proxy,
                p.share,
                if p.silent { "(silent)" } else { "" }
            )
        })
        .collect();
    if f.shares.len() > SHOWN {
        cells.push(format!("+{}", f.shares.len() - SHOWN));
    }
    cells.join(",")
}

/// Pads the columns of `rows` (the first is the header) with two spaces between them.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let width = widths.get(c).copied().unwrap_or(0);
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `huntgatectl status`: one row per hunt.
pub fn status(hunts: &[pb::Hunt], version: u64, default_ratio: f64, now_ms: i64) -> String {
    let mut rows = vec![[
        "HUNT", "LIMIT", "MAX", "RATIO", "REASON", "ACTIVE", "SIGNALS", "STALE", "SHARES",
        "OVERRIDE",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect::<Vec<_>>()];
    for h in hunts {
        let stale = h.signals.iter().any(|s| s.state == "stale");
        let signals: Vec<String> = h.signals.iter().map(signal_cell).collect();
        rows.push(vec![
            if h.ended {
                format!("{} (ended)", h.hunt)
            } else {
                h.hunt.clone()
            },
            h.limit.to_string(),
            h.max_hunters.to_string(),
            format!("{:.2}", h.ratio),
            h.reason.clone(),
            h.fleet
                .as_ref()
                .map_or_else(|| "-".to_owned(), |f| f.active.to_string()),
            if signals.is_empty() {
                "-".to_owned()
            } else {
                signals.join(" ")
            },
            if stale { "yes" } else { "no" }.to_owned(),
            h.fleet.as_ref().map_or_else(|| "-".to_owned(), shares_cell),
            h.r#override
                .as_ref()
                .map_or_else(|| "-".to_owned(), |o| override_line(o, now_ms)),
        ]);
    }
    let mut out = table(&rows);
    let _ = writeln!(
        out,
        "{} hunts, document version {version}, unlisted hunts at ratio {default_ratio:.2}",
        hunts.len()
    );
    out
}

/// `huntgatectl explain HUNT`: why the limit is what it is.
pub fn explain(h: &pb::Hunt, now_ms: i64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "hunt {} ({}): limit {} = floor(max_hunters {} × ratio {})",
        h.hunt,
        h.source.replace('_', " "),
        h.limit,
        h.max_hunters,
        h.ratio
    );
    if h.ended {
        let _ = writeln!(
            out,
            "  ENDED through the API: out of the throttle document (StartHunt brings it back)"
        );
    }
    let _ = writeln!(out, "  reason: {}", h.reason);
    if let Some(p) = &h.policy {
        let pin = p
            .pin_ratio
            .map(|r| format!(", pin_ratio {r}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  policy file: max_hunters {}, min_hunters {}{pin}",
            p.max_hunters, p.min_hunters
        );
    }
    if let Some(s) = &h.started {
        let _ = writeln!(
            out,
            "  started: max_hunters {}, min_hunters {} (by {}, {}: \"{}\")",
            s.max_hunters,
            s.min_hunters,
            s.by,
            ago(s.at_ms, now_ms),
            s.reason
        );
    }
    match &h.r#override {
        Some(o) => {
            let _ = writeln!(
                out,
                "  override (wins over the policy): {}",
                override_line(o, now_ms)
            );
        }
        None => {
            let _ = writeln!(out, "  override: none");
        }
    }
    if let Some(k) = &h.knobs {
        let _ = writeln!(
            out,
            "  law: cut {} every {} s while a signal is above its high threshold; after {} s calm, recover {} every {} s; ratio floor {} (min_hunters {})",
            k.cut_step, k.cut_interval_s, k.stable_period_s, k.recover_step, k.recover_interval_s, k.min_ratio, h.min_hunters
        );
    }
    if h.signals.is_empty() {
        let _ = writeln!(
            out,
            "  signals: none bound (the ratio moves only by overrides)"
        );
    } else {
        let _ = writeln!(out, "  signals:");
        for s in &h.signals {
            let value = s
                .value
                .map_or_else(|| "never read".to_owned(), |v| round3(v).to_string());
            let error = if s.error.is_empty() {
                String::new()
            } else {
                format!("; last read failed: {}", s.error)
            };
            let read = if s.value.is_some() {
                format!("last good read {:.1} s ago", s.age_s)
            } else {
                format!("bound {:.1} s ago", s.age_s)
            };
            let _ = writeln!(
                out,
                "    {} = {value}: {} (high {}, low {}; {read}{error})",
                s.id, s.state, s.high, s.low
            );
        }
    }
    if h.steps.is_empty() {
        let _ = writeln!(out, "  last steps: none since the governor started");
    } else {
        let _ = writeln!(out, "  last steps (oldest first):");
        for s in &h.steps {
            let _ = writeln!(
                out,
                "    {:>9}  {} → {}  {}",
                ago(s.at_ms, now_ms),
                s.from_ratio,
                s.to_ratio,
                s.reason
            );
        }
    }
    match &h.fleet {
        Some(f) => {
            let _ = writeln!(
                out,
                "  fleet: limit {}, {} active, {} held, {} proxies: {}",
                f.limit,
                f.active,
                f.held,
                f.proxies,
                shares_cell(f)
            );
        }
        None => {
            let _ = writeln!(
                out,
                "  fleet: no proxy reported this hunt (or leases are off)"
            );
        }
    }
    out
}

/// `huntgatectl audit`: newest first.
pub fn audit(entries: &[pb::AuditEntry], now_ms: i64) -> String {
    let mut rows = vec![["WHEN", "BY", "ACTION", "HUNT", "REASON", "DETAIL"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect::<Vec<_>>()];
    for e in entries {
        rows.push(vec![
            ago(e.at_ms, now_ms),
            e.by.clone(),
            e.action.clone(),
            e.hunt.clone(),
            format!("\"{}\"", e.reason),
            e.detail.clone(),
        ]);
    }
    table(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hunt() -> pb::Hunt {
        pb::Hunt {
            hunt: "h1".into(),
            max_hunters: 400,
            ratio: 0.7,
            limit: 280,
            reason: "redis_memory".into(),
            source: "policy_file".into(),
            signals: vec![pb::Signal {
                id: "redis:main:memory".into(),
                value: Some(0.8512),
                state: "overloaded".into(),
                high: 0.8,
                low: 0.7,
                age_s: 1.0,
                error: String::new(),
            }],
            r#override: Some(pb::Override {
                max_hunters: Some(400),
                reason: "orchestrator".into(),
                by: "ops".into(),
                at_ms: 1_000,
                ..pb::Override::default()
            }),
            steps: vec![pb::Step {
                at_ms: 5_000,
                from_ratio: 0.8,
                to_ratio: 0.7,
                reason: "redis_memory".into(),
            }],
            ..pb::Hunt::default()
        }
    }

    #[test]
    fn status_shows_the_limit_the_signal_and_the_override() {
        let text = status(&[hunt()], 7, 1.0, 61_000);
        assert!(text.contains("h1"), "{text}");
        assert!(text.contains("280"), "{text}");
        assert!(text.contains("redis:main:memory=0.851!"), "{text}");
        assert!(
            text.contains("max 400 (by ops, 60 s ago: \"orchestrator\")"),
            "{text}"
        );
        assert!(text.contains("document version 7"), "{text}");
    }

    #[test]
    fn explain_names_each_signal_against_its_thresholds_and_the_last_steps() {
        let text = explain(&hunt(), 65_000);
        assert!(
            text.contains("limit 280 = floor(max_hunters 400 × ratio 0.7)"),
            "{text}"
        );
        assert!(
            text.contains("redis:main:memory = 0.851: overloaded (high 0.8, low 0.7"),
            "{text}"
        );
        assert!(text.contains("60 s ago  0.8 → 0.7  redis_memory"), "{text}");
    }

    #[test]
    fn exit_codes_follow_the_status() {
        assert_eq!(exit_code(tonic::Code::Unauthenticated), EXIT_AUTH);
        assert_eq!(exit_code(tonic::Code::InvalidArgument), EXIT_REFUSED);
        assert_eq!(exit_code(tonic::Code::NotFound), EXIT_NOT_FOUND);
        assert_eq!(exit_code(tonic::Code::Unavailable), EXIT_UNAVAILABLE);
    }
}
