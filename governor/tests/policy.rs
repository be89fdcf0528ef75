//! Policy parsing, validation, live reload and import-legacy, on temp directories.

// Test helpers outside #[test] functions unwrap and panic too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::path::Path;
use std::sync::Arc;

use huntgate_governor::clock::secs;
use huntgate_governor::governor::Governor;
use huntgate_governor::law::{OnStale, Reason};
use huntgate_governor::legacy::{import_legacy, LegacyTarget};
use huntgate_governor::policy::compile::{load_dir, parse_yaml};
use huntgate_governor::policy::raw::RawHunt;
use huntgate_governor::policy::watch::PolicyWatcher;
use huntgate_governor::policy::{Overrides, RedisOverride, MAX_HUNTS};
use huntgate_governor::signal::SignalId;
use support::{write, NoSources};

const DEFAULTS: &str = "
eval_period_s: 5
max_hunters: 2000
signals: [redis:main]
redis:
  main: {url: 'redis://127.0.0.1:6379'}
kafka: {brokers: '127.0.0.1:9092'}
control: {cut_step: 0.2}
";

fn dir_with(hunts: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "defaults.yaml", DEFAULTS);
    for (name, text) in hunts {
        write(dir.path(), &format!("hunts/{name}"), text);
    }
    dir
}

fn error_of(dir: &Path) -> String {
    load_dir(dir, &Overrides::default())
        .unwrap_err()
        .to_string()
}

#[test]
fn shipped_policies_are_valid() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let policy = load_dir(&shipped, &Overrides::default()).unwrap();
    let hunt = &policy.hunts["hunt-001"];
    assert_eq!(hunt.max_hunters, 50_000);
    assert_eq!(
        hunt.signals,
        vec![
            SignalId::parse("redis:main").unwrap(),
            SignalId::parse("kafka:hunt-001-scorers/hunt-001-events").unwrap()
        ]
    );
    // The shipped defaults are the Hunt-002 law.
    assert_eq!(hunt.knobs, huntgate_governor::law::Knobs::default());
    assert_eq!(policy.eval_period_ms, secs(5));
    assert_eq!(policy.ttl_s, 10);
}

#[test]
fn hunts_inherit_and_override_defaults() {
    let dir = dir_with(&[
        ("Hunt-001.yaml", "max_hunters: 50000\nmin_hunters: 5000\ncontrol: {cut_interval_s: 20, on_stale: overloaded}\n"),
        ("hunt-002.yml", ""),
        ("hunt-003.yaml", "signals: ['kafka:scorers/hunt-003']\npin_ratio: 0.5\n"),
        (".hunt-004.yaml.swp", "garbage: ["),
        ("README.txt", "not a policy"),
    ]);
    let p = load_dir(dir.path(), &Overrides::default()).unwrap();
    assert_eq!(
        p.hunts.keys().collect::<Vec<_>>(),
        ["hunt-001", "hunt-002", "hunt-003"]
    );
    let h1 = &p.hunts["hunt-001"];
    assert_eq!((h1.max_hunters, h1.min_hunters), (50_000, 5000));
    assert_eq!(
        h1.knobs.cut_step, 0.2,
        "inherited from defaults.yaml control"
    );
    assert_eq!(h1.knobs.cut_interval_ms, secs(20));
    assert_eq!(h1.knobs.on_stale, OnStale::Overloaded);
    assert_eq!(h1.signals, vec![SignalId::parse("redis:main").unwrap()]);
    let h2 = &p.hunts["hunt-002"];
    assert_eq!(h2.max_hunters, 2000, "an empty file takes every default");
    assert_eq!(h2.knobs.cut_interval_ms, secs(30));
    let h3 = &p.hunts["hunt-003"];
    assert_eq!(h3.pin_ratio, Some(0.5));
    assert_eq!(
        h3.signals,
        vec![SignalId::parse("kafka:scorers/hunt-003").unwrap()]
    );
    assert_eq!(p.bound_signals().len(), 2);
}

#[test]
fn unknown_field_is_rejected_naming_file_and_field() {
    let dir = dir_with(&[(
        "hunt-001.yaml",
        "max_hunters: 10\ncontrol:\n  cut_stepp: 0.1\n",
    )]);
    let e = error_of(dir.path());
    assert!(e.contains("hunts/hunt-001.yaml"), "{e}");
    assert!(e.contains("field `control.cut_stepp`"), "{e}");
    assert!(e.contains("unknown field `cut_stepp`"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "defaults.yaml", "max_hunterz: 5\n");
    let e = error_of(dir.path());
    assert!(
        e.contains("defaults.yaml") && e.contains("unknown field `max_hunterz`"),
        "{e}"
    );
}

#[test]
fn invalid_values_name_file_field_and_problem() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "control: {cut_step: 1.5}",
            "field `control.cut_step`",
            "1.5 is outside (0, 1]",
        ),
        (
            "control: {min_ratio: -0.1}",
            "field `control.min_ratio`",
            "outside [0, 1]",
        ),
        ("max_hunters: 0", "field `max_hunters`", "at least 1"),
        (
            "max_hunters: 10\nmin_hunters: 11",
            "field `min_hunters`",
            "11 is above max_hunters 10",
        ),
        ("max_hunters: lots", "field `max_hunters`", "invalid type"),
        ("pin_ratio: 2", "field `pin_ratio`", "outside [0, 1]"),
        (
            "signals: [redis:other]",
            "field `signals[0]`",
            "no Redis endpoint `other`",
        ),
        (
            "signals: [postgres:x]",
            "field `signals[0]`",
            "not a signal",
        ),
        (
            "control: {redis_memory_low: 0.9}",
            "field `control.redis_memory_low`",
            "above redis_memory_high",
        ),
        (
            "control: {kafka_lag_high: 10, kafka_lag_low: 20}",
            "field `control.kafka_lag_low`",
            "above kafka_lag_high",
        ),
        (
            "control: {on_stale: panic}",
            "field `control.on_stale`",
            "unknown variant `panic`",
        ),
        ("max_hunters: [", "hunts/hunt-001.yaml", "line"),
    ];
    for (text, field, problem) in cases {
        let dir = dir_with(&[("hunt-001.yaml", text)]);
        let e = error_of(dir.path());
        assert!(e.contains("hunts/hunt-001.yaml"), "{text}: {e}");
        assert!(e.contains(field), "{text}: {e}");
        assert!(e.contains(problem), "{text}: {e}");
    }
}

#[test]
fn invalid_defaults_are_rejected() {
    let cases: &[(&str, &str)] = &[
        ("eval_period_s: 0", "field `eval_period_s`"),
        ("ttl_s: 0", "field `ttl_s`"),
        ("redis: {main: {url: 'http://x'}}", "field `redis.main.url`"),
        (
            "redis: {main: {url: 'redis://x', capacity_bytes: 0}}",
            "field `redis.main.capacity_bytes`",
        ),
        ("kafka: {brokers: 'localhost'}", "field `kafka.brokers`"),
        ("signals: ['kafka:g/t']", "needs `kafka: {brokers"),
    ];
    for (text, needle) in cases {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "defaults.yaml", text);
        let e = error_of(dir.path());
        assert!(
            e.contains("defaults.yaml") && e.contains(needle),
            "{text}: {e}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let e = error_of(dir.path());
    assert!(e.contains("defaults.yaml: cannot read"), "{e}");
}

#[test]
fn bad_file_names_and_duplicate_hunts_are_rejected() {
    let dir = dir_with(&[("hunt 1.yaml", "")]);
    let e = error_of(dir.path());
    assert!(e.contains("is not a hunt id"), "{e}");
    let dir = dir_with(&[("Hunt-001.yaml", ""), ("hunt-001.yml", "")]);
    let e = error_of(dir.path());
    assert!(e.contains("defined by two files"), "{e}");
}

#[test]
fn hunt_count_is_capped() {
    let dir = dir_with(&[]);
    for i in 0..=MAX_HUNTS {
        write(dir.path(), &format!("hunts/h{i}.yaml"), "");
    }
    let e = error_of(dir.path());
    assert!(e.contains("more than the cap of 1000"), "{e}");
}

#[test]
fn overrides_point_endpoints_elsewhere() {
    let dir = dir_with(&[]);
    let o = Overrides {
        redis: vec!["redis://10.0.0.1:7000".parse::<RedisOverride>().unwrap()],
        kafka_brokers: Some("127.0.0.1:19092".into()),
    };
    let p = load_dir(dir.path(), &o).unwrap();
    assert_eq!(p.redis["main"].url, "redis://10.0.0.1:7000");
    assert_eq!(p.kafka.as_ref().unwrap().brokers, "127.0.0.1:19092");
    let named: RedisOverride = "cache=redis://127.0.0.1:7001".parse().unwrap();
    assert_eq!(named.name.as_deref(), Some("cache"));
    let p = load_dir(
        dir.path(),
        &Overrides {
            redis: vec![named],
            kafka_brokers: None,
        },
    )
    .unwrap();
    assert_eq!(p.redis["cache"].url, "redis://127.0.0.1:7001");
    assert_eq!(p.redis["main"].url, "redis://127.0.0.1:6379");
    let bad = Overrides {
        redis: vec![],
        kafka_brokers: Some("nope".into()),
    };
    let e = load_dir(dir.path(), &bad).unwrap_err().to_string();
    assert!(
        e.starts_with("--kafka (HUNTGATE_KAFKA): `nope` is not host:port"),
        "the error names the flag the value came from: {e}"
    );
}

#[test]
fn watcher_reports_changes_once_and_keeps_quiet_otherwise() {
    let dir = dir_with(&[("hunt-001.yaml", "max_hunters: 100\n")]);
    let mut w = PolicyWatcher::new(dir.path().to_path_buf(), Overrides::default());
    let p = w.poll().unwrap().unwrap();
    assert_eq!(p.hunts["hunt-001"].max_hunters, 100);
    assert!(w.poll().is_none(), "unchanged");

    write(dir.path(), "hunts/hunt-001.yaml", "max_hunters: 200\n");
    assert_eq!(
        w.poll().unwrap().unwrap().hunts["hunt-001"].max_hunters,
        200
    );
    write(dir.path(), "hunts/hunt-002.yaml", "");
    assert_eq!(w.poll().unwrap().unwrap().hunts.len(), 2);
    std::fs::remove_file(dir.path().join("hunts/hunt-002.yaml")).unwrap();
    assert_eq!(w.poll().unwrap().unwrap().hunts.len(), 1);

    write(dir.path(), "hunts/hunt-001.yaml", "max_hunters: -1\n");
    assert!(w.poll().unwrap().is_err());
    assert!(w.poll().is_none(), "a rejected tree is reported once");
    write(dir.path(), "hunts/hunt-001.yaml", "max_hunters: 300\n");
    assert_eq!(
        w.poll().unwrap().unwrap().hunts["hunt-001"].max_hunters,
        300
    );

    std::fs::remove_file(dir.path().join("defaults.yaml")).unwrap();
    assert!(w.poll().unwrap().is_err());
    assert!(w.poll().is_none());
}

/// An invalid edit leaves the last good policy in force, and the metrics say so.
#[test]
fn rejected_reload_keeps_last_good_policy() {
    let dir = dir_with(&[("hunt-001.yaml", "max_hunters: 50000\n")]);
    let mut w = PolicyWatcher::new(dir.path().to_path_buf(), Overrides::default());
    let first = w.poll().unwrap().unwrap();
    let mut g = Governor::new(first, Arc::new(NoSources), 1, 0);
    let redis = SignalId::parse("redis:main").unwrap();
    g.evaluate_with(vec![(redis.clone(), Ok(0.5))], 0);
    let v1 = g.document().version;

    write(
        dir.path(),
        "hunts/hunt-001.yaml",
        "max_hunters: 50000\ncontrol: {cut_step: 7}\n",
    );
    let result = w.poll().unwrap();
    let message = result.as_ref().unwrap_err().to_string();
    assert!(
        message.contains("hunt-001.yaml: field `control.cut_step`"),
        "{message}"
    );
    g.apply_reload(result, secs(1));
    let snap = g.subscribe().borrow().clone();
    assert!(!snap.last_reload_ok);
    assert_eq!(snap.counters.reloads_failed, 1);
    assert_eq!(snap.last_reload_error.as_deref(), Some(message.as_str()));
    let text = huntgate_governor::metrics::render(&snap);
    assert!(
        text.contains("huntgate_policy_last_reload_ok 0\n"),
        "{text}"
    );
    assert!(
        text.contains("huntgate_policy_reloads_total{result=\"failure\"} 1\n"),
        "{text}"
    );
    // Still governed by the old policy.
    g.evaluate_with(vec![(redis.clone(), Ok(0.95))], secs(5));
    let entry = g.document().hunts["hunt-001"];
    // cut_step 0.2 from defaults.yaml
    assert_eq!(
        (entry.ratio, entry.max_hunters, entry.reason),
        (0.8, 50_000, Reason::RedisMemory)
    );

    write(dir.path(), "hunts/hunt-001.yaml", "max_hunters: 60000\n");
    g.apply_reload(w.poll().unwrap(), secs(6));
    let before = g.document().version;
    g.evaluate_with(vec![(redis, Ok(0.95))], secs(10));
    assert!(g.document().version > before && before > v1);
    assert_eq!(g.document().hunts["hunt-001"].max_hunters, 60_000);
    let snap = g.subscribe().borrow().clone();
    assert!(snap.last_reload_ok);
    assert_eq!(snap.counters.reloads_ok, 2);
}

#[test]
fn import_legacy_produces_loadable_policies() {
    let legacy = "max_concurrent_hunters: 2000\nleaderboard_refresh_s: 5\n";
    let defaults = import_legacy(legacy, &LegacyTarget::Defaults).unwrap();
    assert!(defaults.contains("max_hunters: 2000"), "{defaults}");
    assert!(
        defaults.contains("leaderboard_refresh_s"),
        "ignored keys are listed: {defaults}"
    );
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "defaults.yaml", &defaults);
    let hunt = import_legacy(legacy, &LegacyTarget::Hunt("hunt-001".into())).unwrap();
    write(dir.path(), "hunts/hunt-001.yaml", &hunt);
    let p = load_dir(dir.path(), &Overrides::default()).unwrap();
    assert_eq!(p.default.max_hunters, 2000);
    assert_eq!(p.hunts["hunt-001"].max_hunters, 2000);
    assert!(
        p.bound_signals().is_empty(),
        "no signal: the same static cap as before"
    );
    let raw: RawHunt = parse_yaml(Path::new("x"), &hunt).unwrap();
    assert_eq!(raw.max_hunters, Some(2000));

    for (bad, needle) in [
        ("other: 1\n", "no `max_concurrent_hunters`"),
        ("max_concurrent_hunters: -5\n", "not a whole number"),
        ("max_concurrent_hunters: 0\n", "not a whole number"),
        ("- a\n", "not a YAML mapping"),
    ] {
        let e = import_legacy(bad, &LegacyTarget::Defaults)
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{bad}: {e}");
    }
}

#[test]
fn cli_import_legacy_and_check() {
    let bin = env!("CARGO_BIN_EXE_huntgate-governor");
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "hunt-config.yml",
        "max_concurrent_hunters: 2000\n",
    );
    let out = std::process::Command::new(bin)
        .arg("import-legacy")
        .arg(dir.path().join("hunt-config.yml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    write(
        dir.path(),
        "p/defaults.yaml",
        &String::from_utf8(out.stdout).unwrap(),
    );
    std::fs::create_dir_all(dir.path().join("p/hunts")).unwrap();
    let out = std::process::Command::new(bin)
        .arg("import-legacy")
        .arg(dir.path().join("hunt-config.yml"))
        .args(["--hunt", "Hunt-007", "-o"])
        .arg(dir.path().join("p/hunts/hunt-007.yaml"))
        .status()
        .unwrap();
    assert!(out.success());
    let out = std::process::Command::new(bin)
        .args(["check", "--policies"])
        .arg(dir.path().join("p"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid (1 hunts, 0 signals bound)"));

    write(dir.path(), "p/hunts/hunt-007.yaml", "max_hunters: many\n");
    let out = std::process::Command::new(bin)
        .args(["check", "--policies"])
        .arg(dir.path().join("p"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hunt-007.yaml: field `max_hunters`"), "{err}");
}

/// Issue 11, defect 6: a Redis URL with a bad scheme was printed with its password, by
/// `check` and in the live-edit ERROR log (both print this error).
#[test]
fn redis_url_password_is_redacted() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "defaults.yaml",
        "redis: {main: {url: 'http://admin:s3cret@cache:6379/0'}}\n",
    );
    std::fs::create_dir_all(dir.path().join("hunts")).unwrap();
    let e = error_of(dir.path());
    assert!(!e.contains("s3cret"), "{e}");
    assert!(
        e.contains("field `redis.main.url`: `http://admin:***@cache:6379/0` is not a redis://"),
        "{e}"
    );
    // From --redis: the error names the flag, not defaults.yaml.
    write(
        dir.path(),
        "defaults.yaml",
        "redis: {main: {url: 'redis://x'}}\n",
    );
    let o = Overrides {
        redis: vec!["http://u:pw@x".parse().unwrap()],
        kafka_brokers: None,
    };
    let e = load_dir(dir.path(), &o).unwrap_err().to_string();
    assert!(!e.contains(":pw@"), "{e}");
    assert!(
        e.starts_with("--redis (HUNTGATE_REDIS): URL of Redis endpoint `main`"),
        "{e}"
    );
}

/// Issue 11, defect 6: a 200 KB value produced a 200 KB error line; a hunt file linked to
/// /etc/passwd printed the file.
#[test]
fn huge_values_are_truncated_and_file_contents_never_echoed() {
    let huge = "x".repeat(200_000);
    let dir = dir_with(&[("hunt-001.yaml", &format!("max_hunters: '{huge}'\n"))]);
    let e = error_of(dir.path());
    assert!(e.len() < 600, "{} bytes", e.len());
    assert!(e.contains("bytes)"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "defaults.yaml",
        &format!("redis: {{main: {{url: 'http://{huge}'}}}}\n"),
    );
    std::fs::create_dir_all(dir.path().join("hunts")).unwrap();
    assert!(error_of(dir.path()).len() < 600);

    let dir = dir_with(&[]);
    std::fs::create_dir_all(dir.path().join("hunts")).unwrap();
    write(
        dir.path(),
        "passwd",
        "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/:/sbin/nologin\n",
    );
    std::os::unix::fs::symlink(
        dir.path().join("passwd"),
        dir.path().join("hunts/evil.yaml"),
    )
    .unwrap();
    let e = error_of(dir.path());
    assert!(
        e.contains("evil.yaml: not a mapping of policy fields"),
        "{e}"
    );
    assert!(!e.contains("root:"), "{e}");
}

#[test]
fn inherited_values_say_where_they_came_from() {
    let defaults = "max_hunters: 2000\nmin_hunters: 500\ncontrol: {redis_memory_low: 0.7}\n";
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "defaults.yaml", defaults);
    write(dir.path(), "hunts/small.yaml", "max_hunters: 100\n");
    let e = error_of(dir.path());
    assert!(
        e.ends_with("small.yaml: field `max_hunters`: 100 is below min_hunters 500 (inherited from defaults.yaml)"),
        "{e}"
    );
    write(
        dir.path(),
        "hunts/small.yaml",
        "control: {redis_memory_high: 0.6}\n",
    );
    let e = error_of(dir.path());
    assert!(
        e.contains("field `control.redis_memory_high`: 0.6 is below redis_memory_low 0.7 (inherited from defaults.yaml)"),
        "{e}"
    );
}

#[test]
fn values_that_cannot_work_are_refused() {
    let cases: &[(&str, &str)] = &[
        (
            "control: {redis_memory_high: 1.5}",
            "field `control.redis_memory_high`: 1.5 is outside (0, 1]",
        ),
        (
            "redis: {main: {url: 'redis://'}}",
            "field `redis.main.url`: `redis://` has no host",
        ),
        (
            "redis: {main: {url: 'redis://h:99999'}}",
            "port `99999` is not in 1-65535",
        ),
        (
            "kafka: {brokers: 'h:99999'}",
            "field `kafka.brokers`: `h:99999`: port `99999` is not in 1-65535",
        ),
        (
            "signals: [redis:main, redis:main]\nredis: {main: {url: 'redis://h'}}",
            "field `signals[1]`: `redis:main` is already listed as signals[0]",
        ),
        (
            "max_hunters:",
            "field `max_hunters`: no value, expected a whole number from 0 to 4294967295",
        ),
        (
            "max_hunters: lots",
            "expected a whole number from 0 to 4294967295",
        ),
        (
            "control:\n  cut_stepp: 1",
            "field `control.cut_stepp`: unknown field `cut_stepp`",
        ),
    ];
    for (text, needle) in cases {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "defaults.yaml", text);
        std::fs::create_dir_all(dir.path().join("hunts")).unwrap();
        let e = error_of(dir.path());
        assert!(e.contains(needle), "{text}: {e}");
        assert!(
            !e.contains("u32") && !e.contains("struct Raw"),
            "{text}: {e}"
        );
    }
}

#[test]
fn accepted_and_ignored_file_names() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "defaults.yml", "max_hunters: 7\n");
    write(dir.path(), "hunts/Hunt-A.YAML", "");
    write(dir.path(), "hunts/sub/hunt-b.yaml", "");
    write(dir.path(), "hunts/notes.txt", "");
    write(dir.path(), "hunts/.hunt-c.yaml.swp", "");
    let tree = huntgate_governor::policy::tree::PolicyTree::read(dir.path()).unwrap();
    assert_eq!(tree.hunts.len(), 1);
    assert_eq!(tree.ignored_files(), 2, "{:?}", tree.warnings);
    assert!(
        tree.warnings
            .iter()
            .any(|w| w.contains("sub: ignored (a sub-folder")),
        "{:?}",
        tree.warnings
    );
    let p = load_dir(dir.path(), &Overrides::default()).unwrap();
    assert_eq!(p.hunts["hunt-a"].max_hunters, 7, "defaults.yml is accepted");
    write(dir.path(), "defaults.yaml", "");
    assert!(error_of(dir.path()).contains("both defaults.yaml and defaults.yml exist"));

    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "defaults.yaml", "");
    let tree = huntgate_governor::policy::tree::PolicyTree::read(dir.path()).unwrap();
    assert!(
        tree.warnings[0].contains("hunts: missing, so no hunt has a policy file"),
        "{:?}",
        tree.warnings
    );
}

/// Issue 11: `session_ttl_s` and `retry_after_s` were reported as having "no huntgate
/// equivalent", but the filter has `session_ttl_s` and `reject.retry_after_s`.
#[test]
fn import_legacy_prints_the_filter_snippet_for_session_ttl_and_retry_after() {
    let legacy = "max_concurrent_hunters: 2000\nsession_ttl_s: 600\nretry_after_s: 15\nleaderboard_refresh_s: 5\n";
    let out = import_legacy(legacy, &LegacyTarget::Defaults).unwrap();
    assert!(
        out.contains("#   {\"session_ttl_s\": 600, \"reject\": {\"retry_after_s\": 15}}\n"),
        "{out}"
    );
    assert!(
        out.contains("(not converted): leaderboard_refresh_s\n"),
        "{out}"
    );
    // The snippet is valid JSON.
    let line = out.lines().find(|l| l.starts_with("#   {")).unwrap();
    let v: serde_json::Value = serde_json::from_str(line.trim_start_matches("#   ")).unwrap();
    assert_eq!(v["reject"]["retry_after_s"], 15);
}
