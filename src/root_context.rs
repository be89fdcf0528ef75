//! The root context of one worker VM: compiles the configuration, prepares the
//! shared-data layout, and runs the 1 s tick (sweeping and gauges).

use std::cell::RefCell;
use std::rc::Rc;

use huntgate_core::config::Config;
use huntgate_core::engine::Worker;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use crate::host::{self, HostSharedData, Level};
use crate::http_context::HuntgateHttp;
use crate::metrics::Metrics;

/// Tick period: sessions are swept and gauges published this often.
const TICK_MS: u32 = 1_000;

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
    shared: Option<Rc<Shared>>,
}

impl HuntgateRoot {
    /// A root context before configuration.
    pub fn new(context_id: u32) -> Self {
        Self {
            context_id,
            shared: None,
        }
    }

    fn owner_id(&self) -> u64 {
        let mut bytes = [0u8; 8];
        match getrandom::fill(&mut bytes) {
            Ok(()) => u64::from_le_bytes(bytes),
            Err(_) => host::now_ms().unwrap_or(0) ^ (u64::from(self.context_id) << 48),
        }
    }
}

impl Context for HuntgateRoot {}

impl RootContext for HuntgateRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = match host::plugin_configuration() {
            Ok(bytes) => bytes,
            Err(e) => {
                host::log(Level::Error, &format!("cannot read configuration: {e}"));
                return false;
            }
        };
        let config = match Config::from_json(&bytes) {
            Ok(config) => config,
            Err(e) => {
                host::log(Level::Error, &format!("invalid configuration: {e}"));
                return false;
            }
        };
        let mut worker = Worker::new(self.owner_id());
        if let Err(e) = worker.configure(&config, &HostSharedData) {
            host::log(Level::Error, &format!("cannot prepare shared data: {e}"));
            return false;
        }
        if let Err(e) = host::set_tick_period_ms(TICK_MS) {
            host::log(Level::Error, &format!("cannot start the tick: {e}"));
            return false;
        }
        self.shared = Some(Rc::new(Shared {
            config,
            worker: RefCell::new(worker),
            metrics: RefCell::new(Metrics::define()),
        }));
        true
    }

    fn on_tick(&mut self) {
        let Some(shared) = &self.shared else { return };
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
                return;
            }
        };
        match worker.tick(&shared.config, &HostSharedData, now) {
            Ok(report) if report.sweeper => {
                metrics.record_tick(report.expired, report.tracked_hunts, &report.gauges)
            }
            Ok(_) => {}
            Err(e) => {
                metrics.host_error();
                host::log(Level::Warn, &format!("sweep failed: {e}"));
            }
        }
        if let Some(error) = worker.throttle_error() {
            host::log(Level::Warn, &format!("throttle document refused: {error}"));
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let shared = self.shared.clone()?;
        Some(Box::new(HuntgateHttp::new(shared)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
