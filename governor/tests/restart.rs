//! Restarts and start-up (issue 11, defects 3, 5 and 7): the saved control state is resumed
//! under its age rule, a signal not read yet gets the start-up grace, and a failing signal's
//! changing cause is visible.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::sync::Arc;

use huntgate_governor::clock::{secs, Millis};
use huntgate_governor::governor::Governor;
use huntgate_governor::law::{HuntSpec, Knobs, OnStale, Reason};
use huntgate_governor::persist::{FileStore, StateStore, STATE_FILE};
use huntgate_governor::policy::{Policy, RedisEndpoint};
use huntgate_governor::signal::{ErrorCause, ReadError, SignalId};
use support::NoSources;

const T0: Millis = 1_800_000_000_000;

fn redis() -> SignalId {
    SignalId::parse("redis:main").unwrap()
}

fn policy(on_stale: OnStale) -> Policy {
    let mut p = Policy::default();
    p.redis.insert(
        "main".into(),
        RedisEndpoint {
            url: "redis://127.0.0.1:1".into(),
            capacity_bytes: None,
        },
    );
    let knobs = Knobs {
        on_stale,
        ..Knobs::default()
    };
    p.default.knobs = knobs;
    p.hunts.insert(
        "hunt-001".into(),
        HuntSpec {
            max_hunters: 50_000,
            min_hunters: 0,
            signals: vec![redis()],
            knobs,
            pin_ratio: None,
        },
    );
    p
}

fn refused() -> Result<f64, ReadError> {
    Err(ReadError::new(ErrorCause::Connect, "connection refused"))
}

fn hunt(g: &Governor) -> (f64, Reason) {
    let e = g.document().hunts["hunt-001"];
    (e.ratio, e.reason)
}

/// Issue 11, defect 3: a restart reset every ratio to 1.0, re-opening every hunt in the
/// middle of an overload. The state is saved (atomically, to a file) and resumed.
#[test]
fn restart_resumes_persisted_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path());
    let p = policy(OnStale::Hold);
    let mut g = Governor::new(p.clone(), Arc::new(NoSources), 1, T0);
    g.evaluate_with(vec![(redis(), Ok(0.95))], T0);
    g.evaluate_with(vec![(redis(), Ok(0.95))], T0 + secs(30));
    assert_eq!(hunt(&g), (0.8, Reason::RedisMemory));
    let saved = g.unsaved(T0 + secs(30)).unwrap();
    store.save(&saved).unwrap();
    assert!(
        g.unsaved(T0 + secs(35)).is_none(),
        "unchanged: nothing to save"
    );
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec![STATE_FILE.to_string()],
        "no temp file left behind"
    );

    // Restart 10 s later, Redis not reachable yet: the ratio resumes at 0.8 and holds.
    let mut g = Governor::new(p.clone(), Arc::new(NoSources), 2, T0 + secs(40));
    assert_eq!(g.restore(&store.load().unwrap().unwrap(), T0 + secs(40)), 1);
    g.evaluate_with(vec![(redis(), refused())], T0 + secs(40));
    assert_eq!(hunt(&g), (0.8, Reason::RedisMemory));
    // The cut schedule continues from the saved last cut (T0+30): the next one at T0+60.
    g.evaluate_with(vec![(redis(), Ok(0.95))], T0 + secs(45));
    assert_eq!(hunt(&g).0, 0.8);
    g.evaluate_with(vec![(redis(), Ok(0.95))], T0 + secs(60));
    assert_eq!(hunt(&g), (0.7, Reason::RedisMemory));

    // A state older than 10 × cut_interval_s (300 s): the ratio still resumes, the step
    // times do not (the next overload cuts at once; recovery waits its stable period).
    let old = T0 + secs(30) + secs(301);
    let mut g = Governor::new(p.clone(), Arc::new(NoSources), 3, old);
    g.restore(&saved, old);
    g.evaluate_with(vec![(redis(), Ok(0.95))], old);
    assert_eq!(hunt(&g), (0.7, Reason::RedisMemory), "cut at once");
    let mut g = Governor::new(p, Arc::new(NoSources), 4, old);
    g.restore(&saved, old);
    g.evaluate_with(vec![(redis(), Ok(0.1))], old);
    assert_eq!(
        hunt(&g),
        (0.8, Reason::Recovering),
        "no step before 60 s calm"
    );
    g.evaluate_with(vec![(redis(), Ok(0.1))], old + secs(60));
    assert_eq!(hunt(&g), (0.85, Reason::Recovering));
}

#[test]
fn a_corrupt_state_file_is_refused_without_echoing_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(STATE_FILE), "root:x:0:0:secret-stuff").unwrap();
    let e = FileStore::new(dir.path()).load().unwrap_err().to_string();
    assert!(e.contains("not a governor state file"), "{e}");
    assert!(!e.contains("secret-stuff"), "{e}");
}

/// Issue 11, defect 5: with `on_stale: overloaded` and Redis unreachable, the hunt was cut
/// 55 ms after start (a never-read signal was stale at once). It is pending for
/// `stale_after_s` (15 s) from start-up, then stale.
#[test]
fn never_read_signal_gets_startup_grace_in_the_governor() {
    let mut g = Governor::new(policy(OnStale::Overloaded), Arc::new(NoSources), 1, T0);
    g.evaluate_with(vec![(redis(), refused())], T0 + 55);
    assert_eq!(hunt(&g), (1.0, Reason::Stable));
    let snap = g.subscribe().borrow().clone();
    let r = &snap.signals[0];
    assert!(!r.stale && !r.health.up);
    g.evaluate_with(vec![(redis(), refused())], T0 + secs(15));
    assert_eq!(hunt(&g).0, 1.0, "still within stale_after_s");
    g.evaluate_with(vec![(redis(), refused())], T0 + secs(20));
    assert_eq!(
        hunt(&g),
        (0.9, Reason::SignalStale),
        "stale now: on_stale applies"
    );
    // Metrics exist from start-up: the age counts from the binding, the value is NaN.
    let text = huntgate_governor::metrics::render(&g.subscribe().borrow());
    assert!(
        text.contains("huntgate_signal_age_seconds{signal=\"redis:main\"} 20\n"),
        "{text}"
    );
    assert!(
        text.contains("huntgate_signal_value{signal=\"redis:main\"} NaN\n"),
        "{text}"
    );
}

/// Issue 11, defect 7: a failing signal whose cause changed ("unreachable broker" → "topic
/// does not exist") logged nothing new. The cause is a bounded label of
/// `huntgate_signal_error_cause`, and its change is logged (rate-limited).
#[test]
fn signal_cause_change_is_exported() {
    let mut g = Governor::new(policy(OnStale::Hold), Arc::new(NoSources), 1, T0);
    let cause_line = |g: &Governor| {
        let text = huntgate_governor::metrics::render(&g.subscribe().borrow());
        text.lines()
            .filter(|l| l.starts_with("huntgate_signal_error_cause{"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    g.evaluate_with(vec![(redis(), refused())], T0);
    assert_eq!(
        cause_line(&g),
        vec!["huntgate_signal_error_cause{signal=\"redis:main\",cause=\"connect\"} 1"]
    );
    g.evaluate_with(
        vec![(
            redis(),
            Err(ReadError::new(ErrorCause::Protocol, "no such topic")),
        )],
        T0 + secs(5),
    );
    assert_eq!(
        cause_line(&g),
        vec!["huntgate_signal_error_cause{signal=\"redis:main\",cause=\"protocol\"} 1"]
    );
    g.evaluate_with(vec![(redis(), Ok(0.1))], T0 + secs(10));
    assert!(
        cause_line(&g).is_empty(),
        "no series while the signal is up"
    );
}

thread_local! {
    static LOG_BUF: std::cell::RefCell<Option<Vec<u8>>> = const { std::cell::RefCell::new(None) };
}

/// Writes into this thread's capture buffer, if one is active.
struct ThreadWriter;

impl std::io::Write for ThreadWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        LOG_BUF.with(|buf| {
            if let Some(v) = buf.borrow_mut().as_mut() {
                v.extend_from_slice(b);
            }
        });
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Log lines (INFO and above) this thread wrote while `f` ran. One global subscriber for
/// the whole test binary (scoped subscribers in parallel tests race on tracing's
/// callsite-interest cache and drop events), writing per thread.
fn logs(f: impl FnOnce()) -> String {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(|| ThreadWriter)
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
    });
    LOG_BUF.with(|b| *b.borrow_mut() = Some(Vec::new()));
    f();
    let bytes = LOG_BUF.with(|b| b.borrow_mut().take()).unwrap_or_default();
    String::from_utf8(bytes).unwrap()
}

/// Issue 11, defect 7: moving from "unreachable" to "topic does not exist" logged nothing.
/// A change of cause is logged, at most once a minute per signal, with the changes it
/// skipped counted.
#[test]
fn failing_signal_cause_change_is_logged_rate_limited() {
    let mut g = Governor::new(policy(OnStale::Hold), Arc::new(NoSources), 1, T0);
    let missing = || Err(ReadError::new(ErrorCause::Protocol, "topic does not exist"));
    let text = logs(|| {
        g.evaluate_with(vec![(redis(), refused())], T0);
        g.evaluate_with(vec![(redis(), refused())], T0 + secs(5));
        g.evaluate_with(vec![(redis(), missing())], T0 + secs(10));
        g.evaluate_with(vec![(redis(), refused())], T0 + secs(15));
        g.evaluate_with(vec![(redis(), missing())], T0 + secs(20));
        g.evaluate_with(vec![(redis(), missing())], T0 + secs(70));
        g.evaluate_with(vec![(redis(), missing())], T0 + secs(75));
        g.evaluate_with(vec![(redis(), Ok(0.1))], T0 + secs(80));
    });
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("signal")).collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].contains("the signal is down") && lines[0].contains("connection refused"),
        "{text}"
    );
    assert!(
        lines[1].contains("the cause changed") && lines[1].contains("topic does not exist"),
        "{text}"
    );
    assert!(lines[1].contains("suppressed_changes=2"), "{text}");
    assert!(lines[2].contains("succeeded again"), "{text}");
}

/// Issue 11: one INFO line per hunt per change (999 lines per cut with 1,000 hunts). Now
/// one line per evaluation, naming a few hunts.
#[test]
fn a_cut_of_1000_hunts_is_one_info_line() {
    let mut p = policy(OnStale::Hold);
    let spec = p.hunts["hunt-001"].clone();
    for i in 0..1000 {
        p.hunts.insert(format!("hunt-{i:04}"), spec.clone());
    }
    let mut g = Governor::new(p, Arc::new(NoSources), 1, T0);
    let text = logs(|| {
        g.evaluate_with(vec![(redis(), Ok(0.95))], T0);
    });
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        lines[0].contains("ratios changed") && lines[0].contains("hunts=1001"),
        "{text}"
    );
    assert!(lines[0].contains("… 996 more"), "{text}");
}
