//! The report: run summaries from the samples and totals (pure), `report.md`, the time-series
//! CSV and the terminal table.

use std::fmt::Write as _;

use crate::loadgen::Totals;
use crate::scenario::{RunKind, Scenario};
use crate::stats::{kafka_drain, peak, settle_time, time_above, LimitSummary, Sample, Summary};

/// One finished run.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Which run.
    pub kind: RunKind,
    /// Its time series.
    pub samples: Vec<Sample>,
    /// Its numbers.
    pub summary: Summary,
}

/// Computes a run's summary. `spike_end_s`: when arrivals stopped (the limit's settling is
/// judged up to then); `band`: how close to its end value the limit must stay to be settled.
pub fn summarize(
    kind: RunKind,
    samples: &[Sample],
    totals: &Totals,
    scenario: &Scenario,
    band: u64,
) -> Summary {
    let spike_end_s = scenario.spike.duration.as_secs_f64();
    let (kafka_lag_max, kafka_drain_s, kafka_observed_after_peak_s) =
        kafka_drain(samples, scenario.drain_threshold);
    let limits: Vec<(f64, u64)> = samples
        .iter()
        .filter_map(|s| s.limit.map(|l| (s.t_s, l)))
        .collect();
    let limit = match kind {
        RunKind::Open => LimitSummary::None,
        RunKind::Legacy => LimitSummary::Fixed(limits.first().map_or(0, |l| l.1)),
        RunKind::Huntgate => {
            let within: Vec<u64> = limits
                .iter()
                .filter(|(t, _)| *t <= spike_end_s)
                .map(|l| l.1)
                .collect();
            LimitSummary::Governed {
                min: within.iter().copied().min().unwrap_or(0),
                end: within.last().copied().unwrap_or(0),
                settle_s: settle_time(&limits, spike_end_s, band),
            }
        }
    };
    Summary {
        run: kind.id().to_string(),
        title: kind.title().to_string(),
        redis_peak_pct: peak(samples.iter().map(|s| s.redis_pct)),
        redis_above_95_s: time_above(samples, 95.0),
        kafka_lag_max,
        kafka_drain_s,
        kafka_observed_after_peak_s,
        playing_peak: samples.iter().map(|s| s.playing).max().unwrap_or(0),
        tally: totals.tally,
        hunters_admitted: totals.hunters_admitted,
        hunters_arrived: totals.hunters_arrived,
        hunters_frozen: totals.hunters_frozen,
        leaderboard_p50_ms: totals.leaderboard.quantile_ms(0.50),
        leaderboard_p95_ms: totals.leaderboard.quantile_ms(0.95),
        leaderboard_reads: totals.leaderboard.len(),
        limit,
    }
}

fn opt(v: Option<f64>, digits: usize, unit: &str) -> String {
    v.map_or_else(|| "–".to_string(), |v| format!("{v:.digits$}{unit}"))
}

fn drain(s: &Summary) -> String {
    match (s.kafka_lag_max, s.kafka_drain_s) {
        (None, _) => "–".to_string(),
        (Some(_), Some(d)) => format!("{d:.0} s"),
        (Some(_), None) => format!(
            "not within the run (> {:.0} s)",
            s.kafka_observed_after_peak_s
        ),
    }
}

fn limit(s: &Summary) -> (String, String) {
    match s.limit {
        LimitSummary::None => ("none".to_string(), "–".to_string()),
        LimitSummary::Fixed(cap) => (
            format!("fixed {cap} (all events)"),
            "never moves".to_string(),
        ),
        LimitSummary::Governed { min, end, settle_s } => (
            format!("governed, min {min}, {end} at spike end (new joins only)"),
            settle_s.map_or_else(|| "never moved".to_string(), |t| format!("{t:.0} s")),
        ),
    }
}

/// The summary table in Markdown, one column per run.
pub fn table(runs: &[Summary]) -> String {
    let mut rows: Vec<(&str, Vec<String>)> = vec![
        (
            "peak Redis memory (of maxmemory)",
            runs.iter()
                .map(|s| opt(s.redis_peak_pct, 1, " %"))
                .collect(),
        ),
        (
            "time with Redis above 95 %",
            runs.iter()
                .map(|s| format!("{:.0} s", s.redis_above_95_s))
                .collect(),
        ),
        (
            "max Kafka lag (messages)",
            runs.iter()
                .map(|s| s.kafka_lag_max.map_or("–".into(), |l| l.to_string()))
                .collect(),
        ),
        (
            "Kafka lag drain time (peak → ≤ threshold)",
            runs.iter().map(drain).collect(),
        ),
        (
            "hunters arrived / admitted",
            runs.iter()
                .map(|s| format!("{} / {}", s.hunters_arrived, s.hunters_admitted))
                .collect(),
        ),
        (
            "most hunters playing at once",
            runs.iter().map(|s| s.playing_peak.to_string()).collect(),
        ),
        (
            "rejected joins (429)",
            runs.iter()
                .map(|s| s.tally.joins_rejected.to_string())
                .collect(),
        ),
        (
            "failed joins (5xx, timeouts)",
            runs.iter()
                .map(|s| s.tally.joins_failed.to_string())
                .collect(),
        ),
        (
            "**freezes** (admitted hunter's request 429)",
            runs.iter()
                .map(|s| format!("**{}**", s.tally.freezes))
                .collect(),
        ),
        (
            "hunters frozen at least once",
            runs.iter().map(|s| s.hunters_frozen.to_string()).collect(),
        ),
        (
            "failed requests of admitted hunters (5xx, timeouts)",
            runs.iter()
                .map(|s| s.tally.play_failed.to_string())
                .collect(),
        ),
        (
            "leaderboard latency p50 / p95",
            runs.iter()
                .map(|s| {
                    format!(
                        "{} / {}",
                        opt(s.leaderboard_p50_ms, 1, " ms"),
                        opt(s.leaderboard_p95_ms, 1, " ms")
                    )
                })
                .collect(),
        ),
    ];
    rows.push(("limit", runs.iter().map(|s| limit(s).0).collect()));
    rows.push((
        "time for the limit to settle",
        runs.iter().map(|s| limit(s).1).collect(),
    ));
    let mut out = String::from("| |");
    for s in runs {
        let _ = write!(out, " {} |", s.title);
    }
    out.push_str("\n|---|");
    for _ in runs {
        out.push_str("---|");
    }
    out.push('\n');
    for (name, cells) in rows {
        let _ = write!(out, "| {name} |");
        for c in cells {
            let _ = write!(out, " {c} |");
        }
        out.push('\n');
    }
    out
}

/// Facts about where and how the demo ran, for the report's header.
#[derive(Debug, Clone)]
pub struct Meta {
    /// When the demo started (UTC, RFC 3339-ish).
    pub started: String,
    /// The machine (CPU count, model).
    pub machine: String,
    /// Wall-clock seconds of the whole demo.
    pub wall_s: f64,
}

/// The whole `report.md`.
pub fn markdown(
    scenario: &Scenario,
    runs: &[Summary],
    meta: &Meta,
    plots: &[(&str, &str)],
) -> String {
    let sp = &scenario.spike;
    let mut out = String::new();
    let _ = writeln!(out, "# Hunt-001 spike, replayed three ways\n");
    let _ = writeln!(
        out,
        "Preset `{}`, started {} on {}; the whole demo took {:.0} s.\n",
        scenario.name, meta.started, meta.machine, meta.wall_s
    );
    let _ = writeln!(
        out,
        "Each run replays the same viral spike against the same stack (Envoy `--concurrency 2`, \
         the sample hunt service, redis-server with maxmemory {} MiB and no eviction, a tansu \
         Kafka broker): hunters arrive over {} s, the arrival rate growing quadratically to \
         {:.0}/s in {} s; each plays {}–{} s, moving every ~{:.1} s (one Kafka event per move) and \
         reading the leaderboard every {} requests, with {} KiB of session state in Redis. The \
         scorers' consumer group drains {} events/s. Observation continues {} s after the last \
         arrival.\n",
        scenario.redis_maxmemory / (1024 * 1024),
        sp.duration.as_secs(),
        sp.peak_per_s,
        sp.ramp.as_secs(),
        sp.play_min.as_secs(),
        sp.play_max.as_secs(),
        scenario.move_interval.as_secs_f64(),
        scenario.leaderboard_every,
        scenario.session_bytes / 1024,
        scenario.scorer_rate,
        scenario.tail.as_secs(),
    );
    for s in runs {
        let what = match s.run.as_str() {
            "a" => "the hunt service enforces `demo/hunt-config.yml` (`max_concurrent_hunters`): \
                    every event of the hunt is answered 429 while it counts more live sessions \
                    than the cap."
                .to_string(),
            "b" => "Envoy without huntgate.".to_string(),
            _ => format!(
                "huntgate in Envoy with `max_hunters` {}, the governor (`demo/policies/`: the \
                 field policy's thresholds, cuts every 1 s instead of 30 s, `min_hunters` {}) \
                 cutting the ratio while Redis is above 80 % or the lag above 1000. Admitted \
                 hunters carry tickets; only new joins are refused.",
                scenario.max_hunters, scenario.min_hunters
            ),
        };
        let _ = writeln!(out, "- **{}**: {what}", s.title);
    }
    out.push('\n');
    let _ = writeln!(out, "## Results\n\n{}", table(runs));
    let _ = writeln!(
        out,
        "A *freeze* is a request of a hunter already admitted that is refused with 429. Failed \
         requests (Redis out of memory, timeouts) are counted apart. Kafka drain time runs from \
         the highest lag to the first sample at or under {} messages. The limit has settled once \
         it stays within one cut step ({} hunters) of its value at the end of the spike.\n",
        scenario.drain_threshold,
        scenario.max_hunters / 10
    );
    let _ = writeln!(out, "## Over time\n");
    for (file, caption) in plots {
        let _ = writeln!(out, "![{caption}]({file})\n");
    }
    let _ = writeln!(
        out,
        "The time series behind the plots (one row per run and second) is in `timeseries.csv`; \
         the numbers above in `summary.json`."
    );
    out
}

/// The time series of every run as CSV.
pub fn csv(runs: &[RunResult]) -> String {
    let mut out = String::from(
        "run,t_s,redis_memory_pct,kafka_lag,limit,playing,joins_admitted,joins_rejected,joins_failed,play_ok,freezes,play_failed\n",
    );
    for r in runs {
        for s in &r.samples {
            let d = &s.delta;
            let _ = writeln!(
                out,
                "{},{:.1},{},{},{},{},{},{},{},{},{},{}",
                r.kind.id(),
                s.t_s,
                s.redis_pct.map_or(String::new(), |p| format!("{p:.2}")),
                s.kafka_lag.map_or(String::new(), |l| l.to_string()),
                s.limit.map_or(String::new(), |l| l.to_string()),
                s.playing,
                d.joins_admitted,
                d.joins_rejected,
                d.joins_failed,
                d.play_ok,
                d.freezes,
                d.play_failed
            );
        }
    }
    out
}

/// What the smoke test checks: zero freezes with huntgate, and a Redis peak lower with
/// huntgate than without (by at least `margin_pct` points). Returns the failures.
pub fn check_invariants(runs: &[Summary], margin_pct: f64) -> Vec<String> {
    let mut failures = Vec::new();
    let find = |id: &str| runs.iter().find(|s| s.run == id);
    let (Some(open), Some(gated)) = (find("b"), find("c")) else {
        return vec!["runs b and c are both needed".to_string()];
    };
    if gated.tally.freezes != 0 {
        failures.push(format!(
            "huntgate froze admitted hunters {} times",
            gated.tally.freezes
        ));
    }
    if gated.hunters_admitted == 0 {
        failures.push("huntgate admitted nobody".to_string());
    }
    match (gated.redis_peak_pct, open.redis_peak_pct) {
        (Some(g), Some(o)) if g + margin_pct <= o => {}
        (g, o) => failures.push(format!(
            "Redis peak with huntgate ({}) not {margin_pct} points below the peak without ({})",
            opt(g, 1, " %"),
            opt(o, 1, " %")
        )),
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Histogram, Tally};

    fn totals(freezes: u64) -> Totals {
        let mut leaderboard = Histogram::default();
        leaderboard.record(2_000);
        leaderboard.record(90_000);
        Totals {
            tally: Tally {
                joins_admitted: 10,
                freezes,
                ..Tally::default()
            },
            leaderboard,
            hunters_admitted: 10,
            hunters_frozen: freezes.min(1),
            hunters_arrived: 12,
        }
    }

    fn samples(redis: &[f64], limit: Option<u64>) -> Vec<Sample> {
        redis
            .iter()
            .enumerate()
            .map(|(i, &p)| Sample {
                t_s: i as f64 * 10.0,
                redis_pct: Some(p),
                kafka_lag: Some((i as u64 * 700) % 2000),
                limit: limit.map(|l| l - (i as u64).min(3) * 70),
                playing: i as u64 * 5,
                delta: Tally::default(),
            })
            .collect()
    }

    #[test]
    fn summaries_report_and_check() {
        let s = Scenario::smoke();
        let open = summarize(
            RunKind::Open,
            &samples(&[50.0, 99.0, 100.0], None),
            &totals(0),
            &s,
            70,
        );
        let gated = summarize(
            RunKind::Huntgate,
            &samples(&[50.0, 82.0, 79.0, 70.0], Some(700)),
            &totals(0),
            &s,
            70,
        );
        assert_eq!(open.redis_peak_pct, Some(100.0));
        assert_eq!(open.redis_above_95_s, 10.0);
        assert_eq!(
            gated.limit,
            LimitSummary::Governed {
                min: 490,
                end: 490,
                settle_s: Some(10.0)
            }
        );
        assert_eq!(gated.kafka_lag_max, Some(1400));
        assert!(check_invariants(&[open.clone(), gated.clone()], 2.0).is_empty());

        let frozen = Summary {
            tally: Tally {
                freezes: 3,
                ..gated.tally
            },
            redis_peak_pct: Some(99.5),
            ..gated.clone()
        };
        let failures = check_invariants(&[open.clone(), frozen], 2.0);
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert_eq!(check_invariants(std::slice::from_ref(&open), 2.0).len(), 1);

        let md = markdown(
            &s,
            &[open.clone(), gated.clone()],
            &Meta {
                started: "now".into(),
                machine: "test".into(),
                wall_s: 1.0,
            },
            &[("redis-memory.png", "Redis memory")],
        );
        assert!(
            md.contains("| peak Redis memory (of maxmemory) | 100.0 % | 82.0 % |"),
            "{md}"
        );
        assert!(md.contains("![Redis memory](redis-memory.png)"));
        assert!(md.contains("| **freezes** (admitted hunter's request 429) | **0** | **0** |"));
    }

    #[test]
    fn csv_has_a_row_per_sample() {
        let s = Scenario::smoke();
        let run = RunResult {
            kind: RunKind::Legacy,
            samples: samples(&[10.0, 20.0], Some(300)),
            summary: summarize(RunKind::Legacy, &[], &totals(1), &s, 30),
        };
        let text = csv(&[run]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines.get(1).copied(),
            Some("a,0.0,10.00,0,300,0,0,0,0,0,0,0")
        );
    }
}
