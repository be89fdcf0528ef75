//! The HTTP filter chains under test, as YAML blocks for `envoy/bench/bench.yaml`.

use std::path::{Path, PathBuf};

use crate::workload::Scale;

/// Secret the bench's huntgate configs sign tickets with (the client mints tickets with it too).
pub const TICKET_SECRET: &str = "bench-secret-0123456789abcdef";

/// The governor feed of a huntgate filter.
#[derive(Debug, Clone)]
pub struct Feed {
    /// `governor.poll_interval_ms`.
    pub poll_interval_ms: u32,
    /// `governor.long_poll_s` (0 = plain polling).
    pub long_poll_s: u32,
    /// The lease exchange (`governor.leases: true`), when on.
    pub leases: Option<LeaseFeed>,
}

/// `governor.leases: true` with this identity; `safe_share` is 0 (no join without a live lease).
#[derive(Debug, Clone)]
pub struct LeaseFeed {
    /// `governor.proxy_id`.
    pub proxy_id: String,
}

/// What sits in front of the router.
#[derive(Debug, Clone)]
pub enum Filters {
    /// Nothing: Envoy's ceiling.
    Bare,
    /// The empty proxy-wasm filter (returns Continue).
    EmptyWasm(PathBuf),
    /// Envoy's native local_ratelimit with one descriptor per hunt.
    LocalRateLimit {
        /// Hunts `h0..h{hunts}` get a descriptor each.
        hunts: u32,
    },
    /// huntgate.
    Huntgate {
        /// The wasm module.
        wasm: PathBuf,
        /// Default `max_hunters`.
        max_hunters: u32,
        /// `max_tracked_hunts`.
        max_tracked_hunts: u32,
        /// Hunts `h0..` listed in `hunts` (registered at configure time).
        listed_hunts: u32,
        /// Optional governor feed (cluster `governor`).
        feed: Option<Feed>,
    },
    /// huntgate with a plugin configuration of the caller's.
    Raw {
        /// The wasm module.
        wasm: PathBuf,
        /// The plugin configuration (JSON).
        configuration: String,
    },
}

impl Filters {
    /// Short name for tables.
    pub fn label(&self) -> &'static str {
        match self {
            Filters::Bare => "bare",
            Filters::EmptyWasm(_) => "empty-wasm",
            Filters::LocalRateLimit { .. } => "local_ratelimit",
            Filters::Huntgate { .. } | Filters::Raw { .. } => "huntgate",
        }
    }

    /// The `http_filters` entries before the router (10-space indented), or "".
    pub fn http_filters(&self) -> String {
        match self {
            Filters::Bare => String::new(),
            Filters::EmptyWasm(wasm) => wasm_filter("empty", wasm, "{}"),
            Filters::LocalRateLimit { hunts } => local_ratelimit(*hunts),
            Filters::Raw {
                wasm,
                configuration,
            } => wasm_filter("huntgate", wasm, configuration),
            Filters::Huntgate {
                wasm,
                max_hunters,
                max_tracked_hunts,
                listed_hunts,
                feed,
            } => wasm_filter(
                "huntgate",
                wasm,
                &huntgate_config(
                    *max_hunters,
                    *max_tracked_hunts,
                    *listed_hunts,
                    feed.as_ref(),
                ),
            ),
        }
    }

    /// The virtual host's `rate_limits` (flow YAML).
    pub fn rate_limits(&self) -> String {
        let Filters::LocalRateLimit { hunts } = self else {
            return "[]".to_string();
        };
        let actions: Vec<String> = (0..*hunts)
            .map(|k| {
                format!(
                    "{{actions: [{{header_value_match: {{descriptor_key: hunt, descriptor_value: h{k}, \
                     headers: [{{name: \":path\", string_match: {{prefix: \"/hunts/h{k}/\"}}}}]}}}}]}}"
                )
            })
            .collect();
        format!("[{}]", actions.join(", "))
    }
}

/// huntgate as the instruction counts run it for `scale`: `max_hunters` per hunt,
/// slots for every hunt, and the hunts beyond the active ones listed (registered
/// at configure time, as a hunt with no hunters yet would be).
pub fn huntgate(wasm: &Path, max_hunters: u32, scale: Scale) -> Filters {
    let listed = if scale.hunts > scale.active_hunts {
        scale.hunts
    } else {
        0
    };
    Filters::Huntgate {
        wasm: wasm.to_path_buf(),
        max_hunters,
        max_tracked_hunts: scale.hunts.max(1024),
        listed_hunts: listed,
        feed: None,
    }
}

/// The huntgate plugin configuration of the bench (sessions never renew during a run).
pub fn huntgate_config(
    max_hunters: u32,
    max_tracked_hunts: u32,
    listed_hunts: u32,
    feed: Option<&Feed>,
) -> String {
    let listed: Vec<String> = (0..listed_hunts)
        .map(|k| format!(r#""h{k}":{{}}"#))
        .collect();
    let governor = feed
        .map(|feed| {
            let leases = feed
                .leases
                .as_ref()
                .map(|l| format!(r#","leases":true,"proxy_id":"{}","safe_share":0"#, l.proxy_id))
                .unwrap_or_default();
            format!(
                r#","governor":{{"cluster":"governor","poll_interval_ms":{},"long_poll_s":{},"max_stale_s":60{leases}}}"#,
                feed.poll_interval_ms, feed.long_poll_s
            )
        })
        .unwrap_or_else(|| r#","standalone":true"#.to_string());
    format!(
        r#"{{"mode":"enforce","hunt":{{"path_prefix":"/hunts/"}},"hunter":{{"header":"x-veltrix-hunter"}},"session_ttl_s":604800,"ticket_secrets":["{TICKET_SECRET}"],"max_hunters":{max_hunters},"max_tracked_hunts":{max_tracked_hunts},"hunts":{{{listed}}},"reject":{{"status":429,"retry_after_s":30}}{governor}}}"#,
        listed = listed.join(",")
    )
}

fn wasm_filter(name: &str, wasm: &Path, configuration: &str) -> String {
    format!(
        r#"          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: {name}
                root_id: {name}
                failure_policy: FAIL_RELOAD
                vm_config:
                  vm_id: ""
                  runtime: envoy.wasm.runtime.v8
                  code: {{local: {{filename: "{path}"}}}}
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: '{configuration}'
"#,
        path = wasm.display(),
        configuration = configuration.replace('\'', "''"),
    )
}

fn local_ratelimit(hunts: u32) -> String {
    let bucket = "{max_tokens: 1000000000, tokens_per_fill: 1000000000, fill_interval: 1s}";
    let mut out = format!(
        r#"          - name: envoy.filters.http.local_ratelimit
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
              stat_prefix: hunts
              token_bucket: {bucket}
              filter_enabled: {{runtime_key: bench_lrl_enabled, default_value: {{numerator: 100, denominator: HUNDRED}}}}
              filter_enforced: {{runtime_key: bench_lrl_enforced, default_value: {{numerator: 100, denominator: HUNDRED}}}}
              descriptors:
"#
    );
    for k in 0..hunts {
        out.push_str(&format!(
            "              - {{entries: [{{key: hunt, value: h{k}}}], token_bucket: {bucket}}}\n"
        ));
    }
    out
}

/// The `clusters` list: the governor's when `governor_port` is set, the
/// proxied upstream's when `upstream_port` is.
pub fn clusters(governor_port: Option<u16>, upstream_port: Option<u16>) -> String {
    let named = [("governor", governor_port), ("upstream", upstream_port)];
    let listed: Vec<String> = named
        .iter()
        .filter_map(|(name, port)| port.map(|port| static_cluster(name, port)))
        .collect();
    if listed.is_empty() {
        "[]".to_string()
    } else {
        format!("\n{}", listed.concat())
    }
}

/// One STATIC loopback cluster (2-space indented list item).
fn static_cluster(name: &str, port: u16) -> String {
    format!(
        "  - name: {name}\n    type: STATIC\n    connect_timeout: 1s\n    load_assignment:\n      cluster_name: {name}\n      endpoints:\n      - lb_endpoints:\n        - endpoint:\n            address:\n              socket_address: {{address: 127.0.0.1, port_value: {port}}}\n"
    )
}

/// The route's action (16-space indented): proxy to cluster `upstream`, or answer
/// `200 ok` directly.
pub fn route_action(upstream_port: Option<u16>) -> String {
    match upstream_port {
        Some(_) => "                route: {cluster: upstream}\n".to_string(),
        None => "                direct_response:\n                  status: 200\n                  body: {inline_string: \"ok\\n\"}\n".to_string(),
    }
}
