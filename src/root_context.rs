//! The root context of one worker VM: compiles the configuration, prepares the
//! shared-data layout, and runs the 1 s tick (sweeping and gauges).

use std::cell::RefCell;
use std::rc::Rc;

use huntgate_core::config::Config;
use huntgate_core::engine::Worker;
use huntgate_core::fetcher::{FetchResult, Fetcher};
use huntgate_core::lease::EndsReport;
use huntgate_core::store;
use huntgate_core::throttle::MAX_THROTTLE_BYTES;

use crate::host::{self, HeaderMap, HostSharedData, Level};
use crate::http_context::HuntgateHttp;
use crate::metrics::Metrics;

/// Tick period: sessions are swept and gauges published this often
/// (shorter when the governor poll interval is shorter).
const TICK_MS: u32 = 1_000;
/// How long the fetcher lease lasts without renewal (renewed every tick).
const FETCHER_LEASE_MS: u64 = 3_000;

/// What every HTTP context of this VM shares.
pub struct Shared {
    /// The compiled configuration.
    pub config: Config,
    /// This worker's engine state.
    pub worker: RefCell<Worker>,
    /// Metric ids.
    pub metrics: RefCell<Metrics>,
}

/// Root context: one per VM (one per worker thread, plus the main thread).
pub struct HuntgateRoot {
    context_id: u32,
    owner: u64,
    shared: Option<Rc<Shared>>,
    fetcher: Fetcher,
    /// This process's identity in the lease exchange.
    proxy_id: String,
    /// This Envoy process's own random id (the same on every worker; new per process).
    incarnation: String,
}

impl HuntgateRoot {
    /// A root context before configuration.
    pub fn new(context_id: u32) -> Self {
        Self {
            context_id,
            owner: 0,
            shared: None,
            fetcher: Fetcher::default(),
            proxy_id: String::new(),
            incarnation: String::new(),
        }
    }

    /// The configured proxy id, else the Envoy node id, else `process_id` (the
    /// process's random id, the same on every worker).
    fn resolve_proxy_id(config: &Config, process_id: &str) -> String {
        let configured = config
            .governor
            .as_ref()
            .and_then(|feed| feed.leases.as_ref())
            .and_then(|leases| leases.proxy_id.clone());
        configured
            .or_else(host::node_id)
            .unwrap_or_else(|| process_id.to_owned())
    }

    /// The random id of this Envoy process, kept in shared data so every worker (and
    /// every VM reload) of the process reads the same one.
    fn process_id(&self) -> String {
        let random = format!("envoy-{:016x}", self.owner_id());
        store::process_id(&HostSharedData, &random).unwrap_or(random)
    }

    fn owner_id(&self) -> u64 {
        let mut bytes = [0u8; 8];
        match getrandom::fill(&mut bytes) {
            Ok(()) => u64::from_le_bytes(bytes),
            Err(_) => host::now_ms().unwrap_or(0) ^ (u64::from(self.context_id) << 48),
        }
    }

    /// The elected fetcher dispatches the next governor fetch when one is due.
    #[inline(never)]
    fn fetch_if_due(&mut self, shared: &Shared, now: u64) {
        let Some(feed) = &shared.config.governor else {
            return;
        };
        match store::acquire_lease(
            &HostSharedData,
            "fetcher",
            self.owner,
            now,
            FETCHER_LEASE_MS,
        ) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                host::log(Level::Warn, &format!("fetcher lease: {e}"));
                return;
            }
        }
        let proxy_id = &self.proxy_id;
        let mut report = || {
            let (lines, ends) = match shared.worker.try_borrow_mut() {
                Ok(mut worker) => {
                    let lines = worker
                        .lease_report(&HostSharedData, now)
                        .unwrap_or_else(|e| {
                            host::log(Level::Warn, &format!("lease report: {e}"));
                            Vec::new()
                        });
                    let (ends, error) = worker.ends_report(&shared.config, &HostSharedData, now);
                    if let Some(e) = error {
                        host::log(Level::Warn, &format!("lease report (ends): {e}"));
                    }
                    (lines, ends)
                }
                Err(_) => (Vec::new(), EndsReport::default()),
            };
            huntgate_core::lease::encode_report(
                proxy_id,
                &self.incarnation,
                shared.config.session_ttl_s,
                &lines,
                &ends,
            )
        };
        let Some(request) = self.fetcher.poll(feed, now, &mut report) else {
            return;
        };
        let headers: Vec<(&str, &str)> = request
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let body = request.body.as_deref();
        match host::dispatch_http_call(&feed.cluster, &headers, body, request.timeout_ms) {
            Ok(token) => self.fetcher.dispatched(token),
            Err(e) => {
                self.fetcher.dispatch_failed(feed, now);
                if let Ok(metrics) = shared.metrics.try_borrow() {
                    metrics.fetch_failed();
                }
                host::log(
                    Level::Warn,
                    &format!(
                        "governor fetch to cluster `{}` not dispatched: {e}",
                        feed.cluster
                    ),
                );
            }
        }
    }

    /// Hands the lease answer's ends (if it had any) to the worker: it records
    /// other proxies' ends and retires the ones this process reported.
    #[inline(never)]
    fn fleet_ends_received(&mut self, shared: &Shared, now: u64) {
        let ends = self.fetcher.take_fleet_ends();
        let Ok(mut worker) = shared.worker.try_borrow_mut() else {
            return;
        };
        let recorded = worker
            .fleet_ends_received(&shared.config, &HostSharedData, ends, now)
            .unwrap_or_else(|e| {
                host::log(Level::Warn, &format!("fleet ends not recorded: {e}"));
                Default::default()
            });
        if recorded.full > 0 {
            host::log(
                Level::Warn,
                &format!(
                    "{} fleet ends not recorded: their ended-session list is full",
                    recorded.full
                ),
            );
        }
        if let Ok(metrics) = shared.metrics.try_borrow() {
            metrics.fleet_ends(recorded.recorded, recorded.full, worker.ends_unshared());
        }
    }

    /// The governor's answer to the call with `token_id` (or its failure).
    #[inline(never)]
    pub fn on_http_call_response(&mut self, token_id: u32, body_size: usize) {
        let (Some(shared), Ok(now)) = (self.shared.clone(), host::now_ms()) else {
            return;
        };
        let Some(feed) = &shared.config.governor else {
            return;
        };
        if !self.fetcher.is_awaited(token_id) {
            // The answer to a call given up as lost: its leases counted from
            // another send time, its ends acknowledge another report.
            host::log(
                Level::Warn,
                &format!("late governor answer (call {token_id}) ignored: the call was given up"),
            );
            return;
        }
        let headers = host::header_pairs(HeaderMap::CallResponse).unwrap_or_default();
        let find = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let status = find(":status").and_then(|s| s.parse::<u32>().ok());
        let body = if body_size > MAX_THROTTLE_BYTES {
            b"document too large".to_vec()
        } else {
            host::call_response_body(body_size).unwrap_or_default()
        };
        let result =
            self.fetcher
                .on_response(feed, &HostSharedData, now, status, find("etag"), &body);
        if let Ok(metrics) = shared.metrics.try_borrow() {
            metrics.fetch_result(&result, self.fetcher.consecutive_failures);
        }
        if feed.leases.is_some() {
            self.fleet_ends_received(&shared, now);
        }
        let failures = self.fetcher.consecutive_failures;
        if let FetchResult::Failed(why) = result {
            // Every failed fetch is logged (at most one per poll interval).
            host::log(
                Level::Warn,
                &format!(
                    "governor fetch from cluster `{}` failed ({failures} in a row): {why}",
                    feed.cluster
                ),
            );
        }
        // A long poll goes out again now, not at the next tick: a change the
        // governor makes in between reaches this proxy at once.
        self.fetch_if_due(&shared, now);
    }

    /// Compiles the plugin configuration and prepares shared data; false refuses it.
    #[inline(never)]
    pub fn on_configure(&mut self) -> bool {
        let bytes = match host::plugin_configuration() {
            Ok(bytes) => bytes,
            Err(e) => {
                host::log(Level::Error, &format!("cannot read configuration: {e}"));
                return false;
            }
        };
        // `{"env": NAME}` secrets come from the VM's environment
        // (vm_config.environment_variables), read through WASI.
        let config = match Config::from_json(&bytes) {
            Ok(config) => config,
            Err(e) => {
                host::log(Level::Error, &format!("invalid configuration: {e}"));
                return false;
            }
        };
        self.owner = self.owner_id();
        self.fetcher = Fetcher::default();
        let mut worker = Worker::new(self.owner);
        let now = host::now_ms().unwrap_or(0);
        match worker.configure(&config, &HostSharedData, now) {
            Ok(None) => {}
            Ok(Some(warning)) => host::log(Level::Warn, &warning),
            Err(e) => {
                host::log(Level::Error, &format!("cannot prepare shared data: {e}"));
                return false;
            }
        }
        self.incarnation = self.process_id();
        self.proxy_id = Self::resolve_proxy_id(&config, &self.incarnation);
        let tick_ms = config
            .governor
            .as_ref()
            .map_or(TICK_MS, |feed| feed.poll_interval_ms.min(TICK_MS));
        if let Err(e) = host::set_tick_period_ms(tick_ms) {
            host::log(Level::Error, &format!("cannot start the tick: {e}"));
            return false;
        }
        match &config.governor {
            Some(feed) => host::log(
                Level::Info,
                &format!(
                    "governor feed: cluster `{}`, path `{}`, every {} ms",
                    feed.cluster, feed.path, feed.poll_interval_ms
                ),
            ),
            None => host::log(
                Level::Info,
                "standalone: no governor; limits come from this configuration only",
            ),
        }
        self.shared = Some(Rc::new(Shared {
            config,
            worker: RefCell::new(worker),
            metrics: RefCell::new(Metrics::define()),
        }));
        true
    }

    /// The tick: the governor fetch when due, sweeping and gauges.
    #[inline(never)]
    pub fn on_tick(&mut self) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        if let Ok(now) = host::now_ms() {
            self.fetch_if_due(&shared, now);
        }
        let (Ok(mut worker), Ok(mut metrics)) = (
            shared.worker.try_borrow_mut(),
            shared.metrics.try_borrow_mut(),
        ) else {
            return;
        };
        let now = match host::now_ms() {
            Ok(now) => now,
            Err(e) => {
                host::log(Level::Warn, &format!("tick: {e}"));
                metrics.flush();
                return;
            }
        };
        match worker.tick(&shared.config, &HostSharedData, now) {
            Ok(report) if report.sweeper => {
                metrics.dropped(report.queue_dropped);
                metrics.record_tick(
                    report.expired,
                    report.tracked_hunts,
                    &report.gauges,
                    shared.config.max_hunt_metrics,
                );
                if shared.config.governor.is_some() {
                    metrics.document_age(worker.document_age_ms(now));
                    metrics.lease_age(worker.lease_age_ms(now));
                }
            }
            Ok(_) => metrics.forget_recorded_gauges(),
            Err(e) => {
                metrics.host_error();
                host::log(Level::Warn, &format!("sweep failed: {e}"));
            }
        }
        metrics.flush();
        if let Some(error) = worker.throttle_error() {
            host::log(Level::Warn, &format!("throttle document refused: {error}"));
        }
    }

    /// The context of a new HTTP stream (none before a configuration compiled).
    pub fn create_http_context(&self) -> Option<HuntgateHttp> {
        self.shared.clone().map(HuntgateHttp::new)
    }
}
