//! Starting a real Envoy with the huntgate filter for one test.
//!
//! Each [`Envoy`] gets its own temporary directory (rendered configs, log,
//! admin address file), free listener ports, an admin API on an OS-assigned
//! port discovered through `--admin-address-path`, and is stopped when
//! dropped. When a test panics, the tail of that Envoy's log is printed.

use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::Duration;

use huntgate_harness::wasm_trace::{self, Tally};
use serde_json::Value;
use tempfile::TempDir;

use crate::http::{Client, Connection};
use crate::locate::{envoy_binary, envoy_template, wasm_module};
use crate::metrics::Metrics;
use crate::poll::{poll_until, try_poll_until, POLL_INTERVAL};
use crate::ports::free_port;
use crate::process::ChildGuard;
use crate::template::{render, yaml_string, Values};
use crate::upstream::Upstream;

/// Bound on Envoy becoming ready (wasm compilation included).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on an LDS update being applied or rejected.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(15);
/// Worker threads per Envoy.
const CONCURRENCY: u32 = 2;
/// Log lines printed when a test fails.
const LOG_TAIL_LINES: usize = 80;
/// Set to keep each Envoy's temporary directory (configs and log).
const KEEP_ENV: &str = "HUNTGATE_E2E_KEEP";
/// Attempts at starting when a picked port was taken in the meantime.
const BIND_ATTEMPTS: usize = 3;

/// How the listener is configured.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Listener {
    /// In the bootstrap (`envoy/e2e/static.yaml`).
    Static,
    /// From a watched file (`envoy/e2e/dynamic.yaml` + `lds/listener.yaml`).
    Dynamic,
}

/// Result of an LDS update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// The listener now runs the new configuration.
    Applied,
    /// Envoy refused the update and kept the previous listener.
    Rejected,
}

/// An Envoy that exited by itself during startup.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    pub log: String,
}

/// The HTTP connection manager's path handling, before the filter sees the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathHandling {
    /// `normalize_path` (RFC 3986 dot segments and unreserved escapes).
    pub normalize_path: bool,
    /// `merge_slashes`.
    pub merge_slashes: bool,
    /// `path_with_escaped_slashes_action` (`KEEP_UNCHANGED`, `REJECT_REQUEST`, ...).
    pub escaped_slashes: &'static str,
}

impl PathHandling {
    /// What the test bootstrap uses unless a test asks otherwise.
    pub const TEST_DEFAULT: Self = Self {
        normalize_path: true,
        merge_slashes: true,
        escaped_slashes: "KEEP_UNCHANGED",
    };
    /// What every shipped Envoy configuration uses (README, "Recommended Envoy settings").
    pub const RECOMMENDED: Self = Self {
        normalize_path: true,
        merge_slashes: true,
        escaped_slashes: "REJECT_REQUEST",
    };
    /// Envoy's own defaults: nothing normalised.
    pub const ENVOY_DEFAULT: Self = Self {
        normalize_path: false,
        merge_slashes: false,
        escaped_slashes: "KEEP_UNCHANGED",
    };
}

/// How to start Envoy, beyond the plugin configuration.
#[derive(Debug, Clone)]
struct Options {
    paths: PathHandling,
    /// The `environment_variables` value of the VM config (YAML flow mapping).
    vm_env: String,
    /// The second endpoint of the `governor` cluster (None: the first again).
    second_governor_port: Option<u16>,
    /// Routes before the catch-all one (each a route object of the route
    /// configuration, e.g. [`skip_route`]'s).
    routes_before: Vec<Value>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            paths: PathHandling::TEST_DEFAULT,
            vm_env: "{}".to_string(),
            second_governor_port: None,
            routes_before: Vec::new(),
        }
    }
}

/// The quick start's route that skips the filter (`envoy/envoy.yaml`: the one
/// whose `typed_per_filter_config` disables `envoy.filters.http.wasm`), sending
/// to the e2e `upstream` cluster instead of the quick start's. Read from the
/// shipped file, so the tests prove the pattern users copy.
pub fn skip_route() -> Value {
    let path = envoy_template("envoy.yaml");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let config: Value =
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
    let mut routes = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let at = routes
        .iter()
        .position(|route| {
            route["typed_per_filter_config"]["envoy.filters.http.wasm"]["disabled"] == true
        })
        .unwrap_or_else(|| panic!("{} has no route that skips the filter", path.display()));
    let mut route = routes.swap_remove(at);
    route["route"]["cluster"] = Value::from("upstream");
    route
}

/// The `routes` of the e2e route configuration: `before`, then everything to `upstream`.
fn routes_value(before: &[Value]) -> String {
    let mut routes = before.to_vec();
    routes.push(serde_json::json!({"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}));
    Value::Array(routes).to_string()
}

/// `environment_variables` with these `key_values`, as YAML flow mapping.
fn vm_env(env: &[(&str, &str)]) -> String {
    let pairs: Vec<String> = env
        .iter()
        .map(|(k, v)| format!("{}: {}", yaml_string(k), yaml_string(v)))
        .collect();
    format!("{{key_values: {{{}}}}}", pairs.join(", "))
}

/// A running Envoy with the huntgate filter.
pub struct Envoy {
    process: ChildGuard,
    /// Removes the directory on drop; `None` when kept for debugging.
    _tempdir: Option<TempDir>,
    dir: PathBuf,
    wasm: PathBuf,
    admin: Option<SocketAddr>,
    listener: SocketAddr,
    /// Version of the LDS file last written (0 for a static listener).
    lds_version: u64,
}

impl Envoy {
    /// Envoy with a static listener running `plugin` in front of `upstream`.
    pub fn start(plugin: &Value, upstream: &Upstream) -> Self {
        Self::start_ready(Listener::Static, plugin, upstream.port(), free_port())
    }

    /// Like [`Envoy::start`], with the listener's path handling set to `paths`.
    pub fn start_with_paths(plugin: &Value, upstream: &Upstream, paths: PathHandling) -> Self {
        Self::start_with_routes(plugin, upstream, paths, Vec::new())
    }

    /// Like [`Envoy::start_with_paths`], with `routes_before` ahead of the
    /// catch-all route (e.g. [`skip_route`]).
    pub fn start_with_routes(
        plugin: &Value,
        upstream: &Upstream,
        paths: PathHandling,
        routes_before: Vec<Value>,
    ) -> Self {
        let options = Options {
            paths,
            routes_before,
            ..Options::default()
        };
        Self::start_ready_with(
            Listener::Static,
            plugin,
            upstream.port(),
            free_port(),
            &options,
        )
    }

    /// Like [`Envoy::start`], with these Wasm VM environment variables
    /// (`vm_config.environment_variables.key_values`).
    pub fn start_with_vm_env(plugin: &Value, upstream: &Upstream, env: &[(&str, &str)]) -> Self {
        let options = Options {
            vm_env: vm_env(env),
            ..Options::default()
        };
        Self::start_ready_with(
            Listener::Static,
            plugin,
            upstream.port(),
            free_port(),
            &options,
        )
    }

    /// Like [`Envoy::start_expecting_exit`], with these Wasm VM environment variables.
    pub fn start_expecting_exit_with_vm_env(plugin: &Value, env: &[(&str, &str)]) -> Exited {
        let options = Options {
            vm_env: vm_env(env),
            ..Options::default()
        };
        Self::expect_exit(plugin, &options)
    }

    /// Envoy with a static listener running `plugin` in front of `upstream`,
    /// whose cluster `governor` is `governor` (see [`crate::Governor`]).
    pub fn start_with_governor(plugin: &Value, upstream: &Upstream, governor: SocketAddr) -> Self {
        Self::start_ready(Listener::Static, plugin, upstream.port(), governor.port())
    }

    /// Like [`Envoy::start_with_governor`] with two governor replicas: the
    /// cluster `governor` round-robins between them, so the filter's
    /// exchanges alternate.
    pub fn start_with_governors(
        plugin: &Value,
        upstream: &Upstream,
        governors: [SocketAddr; 2],
    ) -> Self {
        let options = Options {
            second_governor_port: Some(governors[1].port()),
            ..Options::default()
        };
        Self::start_ready_with(
            Listener::Static,
            plugin,
            upstream.port(),
            governors[0].port(),
            &options,
        )
    }

    /// Envoy whose listener comes from file-based LDS, so that
    /// [`Envoy::reconfigure`] can change `plugin` while it runs.
    pub fn start_dynamic(plugin: &Value, upstream: &Upstream) -> Self {
        Self::start_ready(Listener::Dynamic, plugin, upstream.port(), free_port())
    }

    /// Starts Envoy with a static listener running `plugin` and expects it to
    /// exit by itself (a refused configuration); panics if it becomes ready.
    pub fn start_expecting_exit(plugin: &Value) -> Exited {
        Self::expect_exit(plugin, &Options::default())
    }

    fn expect_exit(plugin: &Value, options: &Options) -> Exited {
        let mut envoy = Self::spawn(Listener::Static, plugin, free_port(), free_port(), options);
        let exited = poll_until("Envoy to exit or become ready", START_TIMEOUT, || {
            if let Some(status) = envoy.process.try_status() {
                return Some(Some(status));
            }
            envoy.probe_ready().then_some(None)
        });
        match exited {
            Some(status) => Exited {
                status,
                log: envoy.log(),
            },
            None => panic!("Envoy accepted a configuration it should refuse: {plugin}"),
        }
    }

    /// The public listener.
    pub fn addr(&self) -> SocketAddr {
        self.listener
    }

    /// A client for the public listener.
    pub fn client(&self) -> Client {
        Client::new(self.listener)
    }

    /// A client for the admin API.
    pub fn admin(&self) -> Client {
        Client::new(self.admin.expect("Envoy admin address is known once ready"))
    }

    /// Envoy's log so far (stdout and stderr).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }

    /// Turns on Envoy's trace of every call across the Wasm boundary (admin
    /// `POST /logging?wasm=trace`); returns where the log stands, for
    /// [`Envoy::traced_requests`].
    pub fn trace_wasm(&self) -> u64 {
        let admin = self.admin.expect("Envoy admin address is known once ready");
        let response = Connection::open(admin).request("POST", wasm_trace::TRACE_ON, &[]);
        assert_eq!(
            response.status,
            200,
            "{}: {}",
            wasm_trace::TRACE_ON,
            response.summary()
        );
        fs::metadata(self.dir.join("envoy.log")).map_or(0, |m| m.len())
    }

    /// What each of the first `n` streams traced after `offset` cost at the Wasm
    /// boundary, in the order Envoy created them; waits until all `n` are closed.
    pub fn traced_requests(&self, offset: u64, n: usize) -> Vec<Tally> {
        poll_until(
            &format!("{n} traced requests in the log"),
            START_TIMEOUT,
            || {
                let mut tallies =
                    wasm_trace::tallies_since(&self.dir.join("envoy.log"), offset).ok()?;
                tallies.truncate(n);
                (tallies.len() == n && tallies.iter().all(|t| t.closed)).then_some(tallies)
            },
        )
    }

    /// The parsed `/stats/prometheus` output.
    pub fn metrics(&self) -> Metrics {
        Metrics::parse(&self.admin().get_ok("/stats/prometheus"))
    }

    /// The value of one stat of `/stats` (`name: value` lines), e.g.
    /// `listener_manager.lds.update_rejected`.
    pub fn stat(&self, name: &str) -> Option<u64> {
        self.admin().get_ok("/stats").lines().find_map(|line| {
            let (stat, value) = line.split_once(": ")?;
            (stat == name).then(|| value.trim().parse().ok()).flatten()
        })
    }

    /// Opens `n` keep-alive connections to the public listener and waits (up to
    /// `bound`) until Envoy reports all of them; panics unless every worker holds
    /// at least one, so requests spread over them reach every worker.
    pub fn connections_on_every_worker(&self, n: usize, bound: Duration) -> Vec<Connection> {
        let connections: Vec<Connection> = (0..n).map(|_| Connection::open(self.addr())).collect();
        let per_worker = poll_until("the connections to be accepted", bound, || {
            let per_worker = self.connections_per_worker();
            (per_worker.iter().sum::<u64>() == n as u64).then_some(per_worker)
        });
        assert!(
            per_worker.len() >= 2 && per_worker.iter().all(|&c| c > 0),
            "connections not spread over every worker: {per_worker:?}"
        );
        connections
    }

    /// Active downstream connections of the public listener, per worker
    /// (index = worker number).
    pub fn connections_per_worker(&self) -> Vec<u64> {
        let prefix = format!(
            "listener.{}_{}.worker_",
            self.listener.ip(),
            self.listener.port()
        );
        let mut per_worker = Vec::new();
        for line in self.admin().get_ok("/stats").lines() {
            let Some((stat, value)) = line.split_once(": ") else {
                continue;
            };
            let Some(worker) = stat
                .strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix(".downstream_cx_active"))
                .and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            if per_worker.len() <= worker {
                per_worker.resize(worker + 1, 0);
            }
            per_worker[worker] = value.trim().parse().unwrap_or(0);
        }
        per_worker
    }

    /// A new version of the filter module for [`Envoy::roll_out`]: the module
    /// under test with a custom section `huntgate-e2e-version` holding `tag` appended
    /// (valid wasm, other bytes, so Envoy builds a new VM for it).
    pub fn new_filter_version(&self, tag: &str) -> PathBuf {
        let mut bytes = std::fs::read(&self.wasm).expect("read the wasm module");
        let name = b"huntgate-e2e-version";
        let mut payload = vec![u8::try_from(name.len()).expect("short name")];
        payload.extend_from_slice(name);
        payload.extend_from_slice(tag.as_bytes());
        bytes.push(0); // custom section
        let mut size = payload.len();
        loop {
            let byte = u8::try_from(size & 0x7f).expect("7 bits");
            size >>= 7;
            if size == 0 {
                bytes.push(byte);
                break;
            }
            bytes.push(byte | 0x80);
        }
        bytes.extend_from_slice(&payload);
        let path = self.dir.join(format!("huntgate-{tag}.wasm"));
        std::fs::write(&path, bytes).expect("write the new filter version");
        path
    }

    /// Rolls out the filter module `wasm` with `plugin` on the running listener (file-based
    /// LDS), as a new filter version would be; panics if Envoy rejects it.
    pub fn roll_out(&mut self, wasm: &Path, plugin: &Value) {
        self.wasm = wasm.to_path_buf();
        self.reconfigure(plugin);
    }

    /// Replaces the plugin configuration of the running listener (file-based
    /// LDS) and waits until it is in use; panics if Envoy rejects it.
    pub fn reconfigure(&mut self, plugin: &Value) {
        if self.try_reconfigure(plugin) == Reload::Rejected {
            panic!("Envoy rejected the listener update with plugin config {plugin}");
        }
    }

    /// Replaces the plugin configuration of the running listener and waits
    /// until Envoy has applied or rejected it.
    pub fn try_reconfigure(&mut self, plugin: &Value) -> Reload {
        assert!(
            self.lds_version > 0,
            "reconfigure needs Envoy::start_dynamic"
        );
        let rejected_before = self.stat(LDS_REJECTED).unwrap_or(0);
        self.lds_version += 1;
        write_listener(
            &self.dir,
            self.lds_version,
            self.listener.port(),
            &self.wasm,
            plugin,
        );
        let expected = plugin.to_string();
        poll_until(
            &format!("LDS version {} to be applied or rejected", self.lds_version),
            RELOAD_TIMEOUT,
            || {
                if self.stat(LDS_REJECTED).unwrap_or(0) > rejected_before {
                    return Some(Reload::Rejected);
                }
                self.listener_runs(&expected).then_some(Reload::Applied)
            },
        )
    }

    /// Whether the dynamic listener is active with plugin configuration
    /// `plugin` and nothing is warming. (Envoy keeps the listener's
    /// `version_info` of the first version across in-place filter chain
    /// updates, so the configuration itself is compared.)
    fn listener_runs(&self, plugin: &str) -> bool {
        let dump = self
            .admin()
            .get_ok("/config_dump?resource=dynamic_listeners");
        let Ok(dump) = serde_json::from_str::<Value>(&dump) else {
            return false;
        };
        dump["configs"].as_array().is_some_and(|configs| {
            configs.iter().any(|listener| {
                listener.get("warming_state").is_none()
                    && contains_string(&listener["active_state"]["listener"], plugin)
            })
        })
    }

    fn start_ready(kind: Listener, plugin: &Value, upstream_port: u16, governor_port: u16) -> Self {
        let options = Options::default();
        Self::start_ready_with(kind, plugin, upstream_port, governor_port, &options)
    }

    fn start_ready_with(
        kind: Listener,
        plugin: &Value,
        upstream_port: u16,
        governor_port: u16,
        options: &Options,
    ) -> Self {
        let mut attempt = 1;
        loop {
            let mut envoy = Self::spawn(kind, plugin, upstream_port, governor_port, options);
            if envoy.wait_ready() {
                return envoy;
            }
            let log = envoy.log();
            if attempt < BIND_ATTEMPTS && log.contains("Address already in use") {
                eprintln!("Envoy could not bind a picked port; retrying with new ports");
                attempt += 1;
                continue;
            }
            // Dropping `envoy` during the panic prints its log tail.
            panic!(
                "Envoy did not become ready (status {:?})",
                envoy.process.try_status()
            );
        }
    }

    /// Renders the configs into a fresh directory and spawns Envoy. The
    /// `governor` cluster (static listener only) points at `governor_port`.
    fn spawn(
        kind: Listener,
        plugin: &Value,
        upstream_port: u16,
        governor_port: u16,
        options: &Options,
    ) -> Self {
        let paths = options.paths;
        let binary = envoy_binary();
        let wasm = wasm_module();
        let tempdir = tempfile::Builder::new()
            .prefix("huntgate-e2e-")
            .tempdir()
            .expect("create temporary directory");
        let dir = tempdir.path().to_path_buf();
        let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let bootstrap = match kind {
            Listener::Static => render(
                &read_template("e2e/static.yaml"),
                &Values::new()
                    .set("listener_port", listener.port().to_string())
                    .set("upstream_port", upstream_port.to_string())
                    .set("governor_port", governor_port.to_string())
                    .set(
                        "second_governor_port",
                        options
                            .second_governor_port
                            .unwrap_or(governor_port)
                            .to_string(),
                    )
                    .set("normalize_path", paths.normalize_path.to_string())
                    .set("merge_slashes", paths.merge_slashes.to_string())
                    .set("escaped_slashes", paths.escaped_slashes)
                    .set("routes", routes_value(&options.routes_before))
                    .set("vm_env", options.vm_env.clone())
                    .set("wasm", yaml_string(&wasm.to_string_lossy()))
                    .set("plugin_config", yaml_string(&plugin.to_string())),
            ),
            Listener::Dynamic => {
                let lds_dir = dir.join("lds");
                fs::create_dir(&lds_dir).expect("create lds directory");
                write_listener(&dir, 1, listener.port(), &wasm, plugin);
                render(
                    &read_template("e2e/dynamic.yaml"),
                    &Values::new()
                        .set("upstream_port", upstream_port.to_string())
                        .set("lds_path", yaml_string(&lds_file(&dir).to_string_lossy()))
                        .set("lds_dir", yaml_string(&lds_dir.to_string_lossy())),
                )
            }
        };
        let bootstrap_path = dir.join("envoy.yaml");
        fs::write(&bootstrap_path, bootstrap).expect("write bootstrap");
        let log = File::create(dir.join("envoy.log")).expect("create envoy.log");
        let child = Command::new(&binary)
            .current_dir(&dir)
            // Info for the filter's own log lines.
            .args(huntgate_harness::envoy::args(
                &bootstrap_path,
                CONCURRENCY,
                "info",
            ))
            .arg("--admin-address-path")
            .arg(dir.join("admin-address"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
        let process = ChildGuard::new(format!("envoy in {}", dir.display()), child);
        let tempdir = if std::env::var_os(KEEP_ENV).is_some() {
            eprintln!("{KEEP_ENV}: keeping {}", tempdir.keep().display());
            None
        } else {
            Some(tempdir)
        };
        Self {
            process,
            _tempdir: tempdir,
            dir,
            wasm,
            admin: None,
            listener,
            lds_version: u64::from(kind == Listener::Dynamic),
        }
    }

    /// Waits until admin `/ready` says LIVE and the listener accepts
    /// connections; `false` if Envoy exits or the bound passes.
    fn wait_ready(&mut self) -> bool {
        try_poll_until(START_TIMEOUT, POLL_INTERVAL, || {
            if self.process.try_status().is_some() {
                return Some(false);
            }
            self.probe_ready().then_some(true)
        })
        .unwrap_or(false)
    }

    /// One readiness check; learns the admin address on the way.
    fn probe_ready(&mut self) -> bool {
        if self.admin.is_none() {
            self.admin = fs::read_to_string(self.dir.join("admin-address"))
                .ok()
                .and_then(|text| text.trim().parse().ok());
        }
        let Some(admin) = self.admin else {
            return false;
        };
        huntgate_harness::envoy::is_ready(admin)
            && std::net::TcpStream::connect_timeout(&self.listener, Duration::from_secs(1)).is_ok()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let start = lines.len().saturating_sub(LOG_TAIL_LINES);
        lines.get(start..).unwrap_or_default().join("\n")
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.process.stop();
        if thread::panicking() {
            eprintln!(
                "---- last {LOG_TAIL_LINES} lines of {} ----\n{}\n---- end of Envoy log ----",
                self.process.name(),
                self.log_tail()
            );
        }
    }
}

/// Stat counting refused LDS updates.
const LDS_REJECTED: &str = "listener_manager.lds.update_rejected";

/// Whether `value` holds the string `needle` anywhere.
fn contains_string(value: &Value, needle: &str) -> bool {
    match value {
        Value::String(s) => s == needle,
        Value::Array(items) => items.iter().any(|v| contains_string(v, needle)),
        Value::Object(fields) => fields.values().any(|v| contains_string(v, needle)),
        _ => false,
    }
}

fn read_template(relative: &str) -> String {
    let path = envoy_template(relative);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn lds_file(dir: &Path) -> PathBuf {
    dir.join("lds").join("listener.yaml")
}

/// Writes version `version` of the LDS file atomically: render next to the
/// watched directory, then rename into it (the watch fires on moves).
fn write_listener(dir: &Path, version: u64, port: u16, wasm: &Path, plugin: &Value) {
    let listener = render(
        &read_template("e2e/lds/listener.yaml"),
        &Values::new()
            .set("version", yaml_string(&version.to_string()))
            .set("listener_port", port.to_string())
            .set("wasm", yaml_string(&wasm.to_string_lossy()))
            .set("plugin_config", yaml_string(&plugin.to_string())),
    );
    let staged = dir.join(format!("listener.yaml.v{version}"));
    fs::write(&staged, listener).expect("write LDS file");
    fs::rename(&staged, lds_file(dir)).expect("move LDS file into the watched directory");
}
