//! What each request costs at the Wasm boundary, counted by Envoy itself (its
//! `wasm:trace` log of every crossing, `huntgate_harness::wasm_trace`): the calls
//! the README's "Hot path" and "Performance" sections promise, and no more. A new
//! host call on a path fails here until the README says what it costs.

use std::collections::BTreeMap;

use huntgate_e2e::plugin::{self, HUNTER_HEADER, TICKET_HEADER};
use huntgate_e2e::{skip_route, Connection, Envoy, PathHandling, Upstream};
use huntgate_harness::wasm_trace::Tally;
use serde_json::json;

use crate::join_on;

fn calls(names: &[(&str, u64)]) -> BTreeMap<String, u64> {
    names.iter().map(|(n, k)| (n.to_string(), *k)).collect()
}

#[test]
fn each_path_makes_only_the_host_calls_the_readme_states() {
    let upstream = Upstream::start();
    // `mark_decisions` at its default (the e2e default marks `session` too).
    let envoy = Envoy::start_with_routes(
        &plugin::config(json!({"max_hunters": 3, "mark_decisions": null})),
        &upstream,
        PathHandling::RECOMMENDED,
        vec![skip_route()],
    );
    // One connection: one worker, whose caches (the hunt's slot, the verified
    // ticket) the measured requests meet warm, as a playing hunter's do.
    let mut connection = Connection::open(envoy.addr());
    let alice = join_on(&mut connection, "h1", "alice");
    assert_eq!(alice.status, 200, "{}", alice.summary());
    let ticket = alice.ticket().expect("alice's ticket");
    assert_eq!(join_on(&mut connection, "h1", "bob").status, 200);
    let play = |connection: &mut Connection| {
        connection.get(
            "/hunts/h1/play",
            &[(HUNTER_HEADER, "alice"), (TICKET_HEADER, &ticket)],
        )
    };
    assert_eq!(play(&mut connection).status, 200, "warming the ticket");

    let offset = envoy.trace_wasm();
    let statuses = [
        play(&mut connection).status,
        connection.get("/about", &[]).status,
        connection.get("/assets/app.js", &[]).status,
        join_on(&mut connection, "h1", "carol").status,
        join_on(&mut connection, "h1", "dave").status,
    ];
    assert_eq!(statuses, [200, 200, 200, 200, 429]);
    // The asset route never enters the VM: four streams for five requests.
    let traced = envoy.traced_requests(offset, 4);
    let [hot, non_hunt, admitted, rejected]: [Tally; 4] =
        traced.try_into().expect("four traced streams");

    // Every request: context create, request headers, response headers, delete.
    for tally in [&hot, &non_hunt, &admitted, &rejected] {
        assert_eq!(tally.into_vm, 4, "{tally:?}");
    }
    // The hot path: the header map, the clock, and the ended-session signal,
    // whose empty value copies nothing into the VM.
    assert_eq!(
        hot.host_calls,
        calls(&[
            ("proxy_get_current_time_nanoseconds", 1),
            ("proxy_get_header_map_pairs", 1),
            ("proxy_get_shared_data", 1),
        ]),
        "{hot:?}"
    );
    assert_eq!(hot.allocations, 1, "only the header map is copied in");
    assert_eq!((hot.shared_bytes_in, hot.shared_writes), (0, 0));
    // A request of no hunt: the header map and the clock; no shared data.
    assert_eq!(
        non_hunt.host_calls,
        calls(&[
            ("proxy_get_current_time_nanoseconds", 1),
            ("proxy_get_header_map_pairs", 1),
        ]),
        "{non_hunt:?}"
    );
    // An admitted join: the feed's metadata, the ended-session signal, the count
    // and the shard read; one CAS on the count, one record write; the decision
    // header upstream, the ticket and its cookie downstream. No stats call (the
    // counters are flushed on the tick).
    assert_eq!(
        admitted.host_calls,
        calls(&[
            ("proxy_add_header_map_value", 1),
            ("proxy_get_current_time_nanoseconds", 1),
            ("proxy_get_header_map_pairs", 1),
            ("proxy_get_shared_data", 4),
            ("proxy_replace_header_map_value", 2),
            ("proxy_set_shared_data", 2),
        ]),
        "{admitted:?}"
    );
    // One 12-byte record in a shard of the hunt's 3 sessions, and the 20-byte count.
    assert!(admitted.shared_bytes_out <= 20 + 8 + 3 * 12, "{admitted:?}");
    // A refused join reads as much, writes nothing, and answers itself.
    assert_eq!(
        rejected.host_calls,
        calls(&[
            ("proxy_get_current_time_nanoseconds", 1),
            ("proxy_get_header_map_pairs", 1),
            ("proxy_get_shared_data", 4),
            ("proxy_send_local_response", 1),
        ]),
        "{rejected:?}"
    );
    assert_eq!(rejected.shared_writes, 0);
}
