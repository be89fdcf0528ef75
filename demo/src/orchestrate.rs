//! `huntgate-demo run`: starts the shared backends, plays the spike once per run, samples the
//! time series, and writes the report, the CSV and the plots.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use huntgate_governor::sources::kafka::KafkaLagSource;
use huntgate_governor::sources::redis::RedisMemorySource;
use huntgate_governor::sources::SignalSource;
use tokio::time::{Instant, MissedTickBehavior};

use crate::http::Http;
use crate::loadgen::{self, Behaviour, Recorder};
use crate::report::{self, Meta, RunResult};
use crate::scenario::{RunKind, Scenario};
use crate::stack::{topic_of, Ports, Redis, RunStack, Tansu, Tools, GROUP};
use crate::stats::Sample;

/// Options of `huntgate-demo run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// `full` (about 5 minutes, runs a b c) or `smoke` (runs b c, shorter).
    #[arg(long, default_value = "full")]
    pub preset: String,
    /// Runs to play, e.g. `a,b,c` (default: the preset's).
    #[arg(long, value_delimiter = ',')]
    pub runs: Vec<String>,
    /// Output directory.
    #[arg(long, default_value = "demo-out")]
    pub out: PathBuf,
    /// Repository root (configs, the filter, the governor binary).
    #[arg(long, default_value = ".")]
    pub root: PathBuf,
    /// Check the smoke invariants at the end (exit 1 if one fails).
    #[arg(long)]
    pub check: bool,
    /// Override the spike's length in seconds.
    #[arg(long)]
    pub spike_s: Option<u64>,
    /// Override the peak arrival rate (hunters per second).
    #[arg(long)]
    pub peak_per_s: Option<f64>,
    /// Override Redis maxmemory in MiB.
    #[arg(long)]
    pub redis_mib: Option<u64>,
    /// Override huntgate's max_hunters.
    #[arg(long)]
    pub max_hunters: Option<u64>,
    /// Override the governor's min_hunters.
    #[arg(long)]
    pub min_hunters: Option<u64>,
    /// Override the consumer group's events per second.
    #[arg(long)]
    pub scorer_rate: Option<u64>,
    /// Override the session state per hunter, bytes.
    #[arg(long)]
    pub session_bytes: Option<usize>,
}

impl RunArgs {
    fn scenario(&self) -> anyhow::Result<Scenario> {
        let mut s = Scenario::preset(&self.preset)?;
        if !self.runs.is_empty() {
            s.runs = self
                .runs
                .iter()
                .map(|r| RunKind::parse(r))
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = self.spike_s {
            s.spike.duration = Duration::from_secs(v);
            s.spike.ramp = s.spike.ramp.min(s.spike.duration);
        }
        if let Some(v) = self.peak_per_s {
            s.spike.peak_per_s = v;
        }
        if let Some(v) = self.redis_mib {
            s.redis_maxmemory = v * 1024 * 1024;
        }
        if let Some(v) = self.max_hunters {
            s.max_hunters = v;
        }
        if let Some(v) = self.min_hunters {
            s.min_hunters = v;
        }
        if let Some(v) = self.scorer_rate {
            s.scorer_rate = v;
        }
        if let Some(v) = self.session_bytes {
            s.session_bytes = v;
        }
        Ok(s)
    }
}

/// A scratch directory removed on drop.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::env::var_os("HUNTGATE_DEMO_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Runs the demo until done, or until Ctrl-C / SIGTERM (every process is stopped either way).
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = run_inner(&args) => r,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted; every process was stopped"),
        _ = term.recv() => anyhow::bail!("terminated; every process was stopped"),
    }
}

async fn run_inner(args: &RunArgs) -> anyhow::Result<()> {
    let scenario = args.scenario()?;
    let root = args.root.canonicalize().context("repository root")?;
    let tools = Tools::locate(&root)?;
    let started = std::time::Instant::now();
    let started_utc = utc_now();
    let work = WorkDir(std::env::temp_dir().join(format!("huntgate-demo-{}", std::process::id())));
    std::fs::create_dir_all(&work.0)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;

    let mut ports = Ports::default();
    say(&format!(
        "huntgate demo ({} preset): runs {}, {} s each; backends starting",
        scenario.name,
        scenario
            .runs
            .iter()
            .map(|r| r.id())
            .collect::<Vec<_>>()
            .join(", "),
        scenario.run_length().as_secs()
    ));
    let redis = Redis::start(&mut ports, scenario.redis_maxmemory)?;
    let kafka = Tansu::start(&work.0)?;

    let mut results = Vec::new();
    for &kind in &scenario.runs {
        let result = play(kind, &scenario, &tools, &mut ports, &work.0, &redis, &kafka).await?;
        results.push(result);
    }
    drop(kafka);
    drop(redis);

    let summaries: Vec<_> = results.iter().map(|r| r.summary.clone()).collect();
    let plots = crate::plot::write_all(&args.out, &results)?;
    let meta = Meta {
        started: started_utc,
        machine: machine(),
        wall_s: started.elapsed().as_secs_f64(),
    };
    std::fs::write(
        args.out.join("report.md"),
        report::markdown(&scenario, &summaries, &meta, &plots),
    )?;
    std::fs::write(args.out.join("timeseries.csv"), report::csv(&results))?;
    std::fs::write(
        args.out.join("summary.json"),
        serde_json::to_string_pretty(&summaries)?,
    )?;
    println!("\n{}", report::table(&summaries));
    say(&format!(
        "report: {}/report.md (plots, timeseries.csv, summary.json beside it); {:.0} s",
        args.out.display(),
        started.elapsed().as_secs_f64()
    ));
    if args.check {
        let failures = report::check_invariants(&summaries, 2.0);
        if !failures.is_empty() {
            anyhow::bail!("demo invariants failed:\n- {}", failures.join("\n- "));
        }
        say("invariants hold: zero freezes with huntgate, Redis peak lower with huntgate than without");
    }
    Ok(())
}

/// One run: fresh Redis contents and topic, its own service/governor/Envoy, the spike.
async fn play(
    kind: RunKind,
    scenario: &Scenario,
    tools: &Tools,
    ports: &mut Ports,
    work: &Path,
    redis: &Redis,
    kafka: &Tansu,
) -> anyhow::Result<RunResult> {
    redis.flush().await?;
    let mut stack = RunStack::start(kind, scenario, tools, ports, work, redis, kafka).await?;
    let memory = RedisMemorySource::new(&redis.url, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let lag = KafkaLagSource::new(
        &kafka.brokers,
        GROUP,
        &topic_of(kind),
        Duration::from_secs(1),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let admin = Http::new(Duration::from_secs(1));
    let legacy_cap = if kind == RunKind::Legacy {
        let text = std::fs::read_to_string(tools.root.join("demo/hunt-config.yml"))?;
        Some(crate::legacy::HuntConfig::parse(&text)?.max_concurrent_hunters)
    } else {
        None
    };

    let behaviour = Arc::new(Behaviour {
        base: format!("http://{}", stack.public),
        hunt: "hunt-001".to_string(),
        move_interval: scenario.move_interval,
        leaderboard_every: scenario.leaderboard_every,
        failure_backoff: Duration::from_secs(1),
    });
    let recorder = Arc::new(Recorder::default());
    let http = Http::new(Duration::from_secs(5));
    say(&format!("{}: started; spike running", kind.title()));
    let t0 = Instant::now();
    let mut hunters = loadgen::start(&scenario.spike, behaviour, http, recorder.clone(), t0);
    let end = t0 + scenario.run_length();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut samples = Vec::new();
    let mut last_print = t0;
    while Instant::now() < end {
        tick.tick().await;
        stack.check()?;
        let t_s = t0.elapsed().as_secs_f64();
        let (redis_pct, kafka_lag, limit) = tokio::join!(
            async { memory.read().await.ok().map(|f| f * 100.0) },
            async { lag.read().await.ok().map(|l| l.max(0.0) as u64) },
            async {
                match kind {
                    RunKind::Huntgate => envoy_limit(&admin, &stack).await,
                    _ => legacy_cap,
                }
            }
        );
        let sample = Sample {
            t_s,
            redis_pct,
            kafka_lag,
            limit,
            playing: recorder.playing(),
            delta: recorder.take_window(),
        };
        samples.push(sample);
        if last_print.elapsed() >= Duration::from_secs(5) {
            last_print = Instant::now();
            let totals = recorder.totals();
            say(&format!(
                "{} t={:>3.0}s playing={:>4} limit={:>5} redis={:>5} lag={:>6} joins ok/429={}/{} freezes={}",
                kind.id(),
                t_s,
                sample.playing,
                limit.map_or("-".into(), |l| l.to_string()),
                redis_pct.map_or("?".into(), |p| format!("{p:.0}%")),
                kafka_lag.map_or("?".into(), |l| l.to_string()),
                totals.tally.joins_admitted,
                totals.tally.joins_rejected,
                totals.tally.freezes,
            ));
        }
    }
    hunters.abort_all();
    while hunters.join_next().await.is_some() {}
    let totals = recorder.totals();
    drop(stack);
    let summary = report::summarize(kind, &samples, &totals, scenario, scenario.max_hunters / 10);
    say(&format!(
        "{}: done: peak Redis {}, max lag {}, freezes {}",
        kind.title(),
        summary
            .redis_peak_pct
            .map_or("?".into(), |p| format!("{p:.1} %")),
        summary.kafka_lag_max.map_or("?".into(), |l| l.to_string()),
        summary.tally.freezes
    ));
    Ok(RunResult {
        kind,
        samples,
        summary,
    })
}

/// huntgate's enforced limit of hunt-001, from Envoy's stats.
async fn envoy_limit(admin: &Http, stack: &RunStack) -> Option<u64> {
    let url = format!("http://{}/stats?filter=huntgate_hunt", stack.admin);
    let text = admin.get_text(&url).await.ok()?;
    gauge(&text, "hunt-001.limit")
}

/// The value of the stat ending in `suffix` in Envoy's `/stats` text.
pub fn gauge(text: &str, suffix: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(": ")?;
        name.ends_with(suffix)
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "[demo] {line}");
    let _ = out.flush();
}

fn utc_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / (1024 * 1024));
    format!("{cpus} cores ({model}), {mem_gib} GiB")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_limit_gauge() {
        let text = "wasmcustom.huntgate_hunt.hunt-001.active: 12\nwasmcustom.huntgate_hunt.hunt-001.limit: 630\n";
        assert_eq!(gauge(text, "hunt-001.limit"), Some(630));
        assert_eq!(gauge(text, "hunt-002.limit"), None);
    }
}
