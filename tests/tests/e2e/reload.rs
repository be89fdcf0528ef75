//! Live configuration changes through file-based LDS: Envoy swaps the
//! filter configuration while the filter's shared data (who holds a slot)
//! stays.

use huntgate_e2e::plugin;
use huntgate_e2e::{Envoy, Reload, Upstream};
use serde_json::json;

use crate::{
    assert_admitted, assert_hunt_full, assert_passed, hunter, join, with_cookie, with_ticket,
};

#[test]
fn lowering_max_hunters_live_keeps_ticket_holders() {
    let upstream = Upstream::start();
    let mut envoy = Envoy::start_dynamic(&plugin::config(json!({"max_hunters": 50})), &upstream);
    let client = envoy.client();
    let tickets: Vec<String> = (0..50)
        .map(|i| assert_admitted(&join(&client, "live", &hunter(i)), "live", 300))
        .collect();
    assert_hunt_full(&join(&client, "live", &hunter(50)), "live", 50, 50);

    envoy.reconfigure(&plugin::config(json!({"max_hunters": 10})));

    // New connections meet the new configuration: a newcomer sees limit 10,
    // while the counts survived the reload (still 50 active).
    let client = envoy.client();
    assert_hunt_full(&join(&client, "live", &hunter(51)), "live", 10, 50);
    for (i, ticket) in tickets.iter().enumerate() {
        let response = if i % 2 == 0 {
            with_ticket(&client, "live", &hunter(i), ticket)
        } else {
            with_cookie(&client, "live", &hunter(i), ticket)
        };
        assert_passed(&response, "session");
    }
    assert_hunt_full(&join(&client, "live", &hunter(52)), "live", 10, 50);
}

#[test]
fn refused_live_update_keeps_previous_configuration() {
    let upstream = Upstream::start();
    let mut envoy = Envoy::start_dynamic(&plugin::config(json!({"max_hunters": 1})), &upstream);
    let client = envoy.client();
    assert_admitted(&join(&client, "keep", "alice"), "keep", 300);

    let outcome = envoy.try_reconfigure(&plugin::config(
        json!({"max_hunters": 5, "session_ttl_s": 0}),
    ));
    assert_eq!(
        outcome,
        Reload::Rejected,
        "Envoy applied an invalid plugin configuration"
    );
    let log = envoy.log();
    assert!(
        log.contains("session_ttl_s"),
        "Envoy's log does not name the invalid field `session_ttl_s`"
    );

    // Still max_hunters 1.
    assert_hunt_full(&join(&envoy.client(), "keep", "bob"), "keep", 1, 1);
}

/// Requests of a loader thread while the listener is reloaded: (ticket plays that did not
/// pass, joins answered other than 200 or 429).
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(usize, Vec<String>, Vec<String>)>,
}

impl Load {
    /// Plays every ticket in turn and joins new hunters into `hunt`, each on a new
    /// connection, until stopped.
    fn start(envoy: &Envoy, hunt: &'static str, tickets: Vec<String>) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let addr = envoy.addr();
        let thread = std::thread::spawn(move || {
            let (mut requests, mut refused, mut odd) = (0, Vec::new(), Vec::new());
            let mut newcomer = 1000;
            while !flag.load(Ordering::SeqCst) {
                let client = huntgate_e2e::Client::new(addr);
                let i = requests % tickets.len();
                let played = with_ticket(&client, hunt, &hunter(i), &tickets[i]);
                if played.status != 200 {
                    refused.push(played.summary());
                }
                let joined = join(&client, hunt, &hunter(newcomer));
                if joined.status != 200 && joined.status != 429 {
                    odd.push(joined.summary());
                }
                newcomer += 1;
                requests += 1;
            }
            (requests, refused, odd)
        });
        Self { stop, thread }
    }

    fn stop(self) -> (usize, Vec<String>, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread
            .join()
            .expect("the loader panicked (a request failed)")
    }
}

#[test]
fn a_listener_reload_and_a_new_filter_version_under_load_keep_every_session() {
    // Shared data outlives the VMs: a listener update (new filter chain, same module)
    // and a roll-out of a new module version both start fresh VMs on every worker, while
    // the counts and session records stay, so ticket holders keep passing and the cap
    // keeps counting what was admitted before.
    const HUNT: &str = "roll";
    let upstream = Upstream::start();
    let mut envoy = Envoy::start_dynamic(&plugin::config(json!({"max_hunters": 40})), &upstream);
    let client = envoy.client();
    let tickets: Vec<String> = (0..20)
        .map(|i| assert_admitted(&join(&client, HUNT, &hunter(i)), HUNT, 300))
        .collect();
    let load = Load::start(&envoy, HUNT, tickets.clone());

    envoy.reconfigure(&plugin::config(json!({"max_hunters": 30})));
    let version = envoy.new_filter_version("v2");
    envoy.roll_out(&version, &plugin::config(json!({"max_hunters": 25})));
    let (requests, refused, odd) = load.stop();
    let dump = envoy.admin().get_ok("/config_dump");
    assert!(
        dump.contains("huntgate-v2.wasm"),
        "the new module version is not in force"
    );

    assert!(requests > 0);
    assert!(
        refused.is_empty(),
        "{} of {requests} ticket plays refused across the reloads: {:?}",
        refused.len(),
        refused.first()
    );
    assert!(
        odd.is_empty(),
        "joins answered neither 200 nor 429: {odd:?}"
    );
    // The count survived both reloads: 25 seats, at least the 20 sessions admitted
    // before and whoever joined while there was room; never more than the limit in force.
    let client = envoy.client();
    let full = join(&client, HUNT, "after-the-roll-out");
    assert_eq!(full.status, 429, "{}", full.summary());
    let active = full.json()["active"].as_u64().expect("active in the 429");
    assert!(
        (25..=40).contains(&active),
        "active {active} after the reloads"
    );
    for (i, ticket) in tickets.iter().enumerate() {
        assert_passed(&with_ticket(&client, HUNT, &hunter(i), ticket), "session");
    }
}

/// The header that traps the VM of the crash-test build (`src/crash_test.rs`).
const CRASH_HEADER: &str = "x-huntgate-test-crash";

#[test]
fn a_worker_vm_that_traps_is_reloaded_and_every_session_survives() {
    // FAIL_RELOAD (the e2e listener's failure_policy): a trapped VM is replaced by a
    // fresh one; shared data — counts and session records — outlives it. The trap comes
    // from a test-only build (cargo feature `crash-test`), never from dist/huntgate.wasm.
    let release = std::fs::read(huntgate_e2e::locate::wasm_module()).expect("read dist wasm");
    assert!(
        !release
            .windows(CRASH_HEADER.len())
            .any(|w| w == CRASH_HEADER.as_bytes()),
        "the release module contains the crash-test trap"
    );
    const HUNT: &str = "trap";
    let upstream = Upstream::start();
    let mut envoy = Envoy::start_dynamic(&plugin::config(json!({"max_hunters": 3})), &upstream);
    envoy.roll_out(
        &huntgate_e2e::locate::crash_test_wasm(),
        &plugin::config(json!({"max_hunters": 2})),
    );
    let client = envoy.client();
    let tickets: Vec<String> = (0..2)
        .map(|i| assert_admitted(&join(&client, HUNT, &hunter(i)), HUNT, 300))
        .collect();
    assert_hunt_full(&join(&client, HUNT, "before-the-trap"), HUNT, 2, 2);

    // Trap the VMs (each request on a new connection, so both workers are hit).
    let mut answers = Vec::new();
    for _ in 0..6 {
        let r = envoy.client().get(
            &format!("/hunts/{HUNT}/join"),
            &[
                (huntgate_e2e::plugin::HUNTER_HEADER, "crasher"),
                (CRASH_HEADER, "1"),
            ],
        );
        assert!(!r.from_upstream(), "a trapping request reached the hunt");
        answers.push(r.status);
    }
    assert!(
        envoy.log().contains("trapping this VM on purpose"),
        "no trap in the log"
    );

    // Envoy replaces a trapped VM lazily, on a request that reaches its worker after the
    // reload backoff: keep sending requests on new connections (they spread over both
    // workers) until every worker that trapped has logged from a fresh VM.
    huntgate_e2e::poll::poll_until(
        "every trapped worker to run a fresh VM",
        std::time::Duration::from_secs(30),
        || {
            let _ = with_ticket(&envoy.client(), HUNT, &hunter(0), &tickets[0]);
            workers_still_trapped(&envoy.log()).is_empty().then_some(())
        },
    );

    // Fresh VMs: ticket holders keep passing, the count survived (still full at 2), and
    // nobody new is admitted past it.
    let client = envoy.client();
    for (i, ticket) in tickets.iter().enumerate() {
        for _ in 0..3 {
            assert_passed(
                &with_ticket(&envoy.client(), HUNT, &hunter(i), ticket),
                "session",
            );
        }
    }
    assert_hunt_full(&join(&client, HUNT, "after-the-trap"), HUNT, 2, 2);
    eprintln!("answers to the trapping requests: {answers:?}");
}

/// The worker threads (Envoy log thread ids) whose VM trapped and that have not logged
/// from a fresh VM since. A trap is Envoy's `proxy_on_request_headers failed` line; any
/// later `wasm log huntgate` line of the same thread comes from its replacement VM.
fn workers_still_trapped(log: &str) -> std::collections::BTreeSet<String> {
    let mut trapped = std::collections::BTreeSet::new();
    for line in log.lines() {
        // `[date time][thread][level][logger] ...`
        let Some(thread) = line.split("][").nth(1) else {
            continue;
        };
        if line.contains("proxy_on_request_headers failed") {
            trapped.insert(thread.to_string());
        } else if line.contains("wasm log huntgate") && !line.contains("panic") {
            trapped.remove(thread);
        }
    }
    trapped
}
