//! Starting the real processes of the demo: redis-server, tansu, the hunt service, the
//! governor and Envoy, each on free loopback ports, each stopped when its guard drops.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

use crate::http::Http;
use crate::procs::{free_port, wait_listening, ChildGuard};
use crate::scenario::{RunKind, Scenario};
use crate::template::{quoted, render};

/// Bound on a process becoming ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Paths of what the demo runs besides the backends (redis-server and tansu are found by
/// the harness that starts them).
#[derive(Debug, Clone)]
pub struct Tools {
    /// Repository root (configs are read from there).
    pub root: PathBuf,
    /// Envoy binary.
    pub envoy: PathBuf,
    /// huntgate-governor binary.
    pub governor: PathBuf,
    /// The filter.
    pub wasm: PathBuf,
    /// This binary (the hunt service is its `service` subcommand).
    pub demo: PathBuf,
}

impl Tools {
    /// Finds the tools (environment overrides first, then the defaults of `make tools`),
    /// and checks that the backends' binaries are there before anything starts.
    pub fn locate(root: &Path) -> anyhow::Result<Self> {
        let found = |r: Result<PathBuf, String>| r.map_err(|e| anyhow::anyhow!("{e}"));
        found(huntgate_harness::redis::redis_server_binary())?;
        found(huntgate_harness::tansu::tansu_binary())?;
        let wasm = root.join("dist/huntgate.wasm");
        Ok(Self {
            root: root.to_path_buf(),
            envoy: found(huntgate_harness::envoy::envoy_binary(root))?,
            governor: found(huntgate_harness::governor::governor_binary(
                root,
                &["release"],
            ))
            .context("cargo build --release -p huntgate-governor")?,
            wasm: match std::env::var_os("HUNTGATE_WASM") {
                Some(path) => root.join(path),
                None if wasm.is_file() => wasm,
                None => anyhow::bail!("{} not found (make wasm)", wasm.display()),
            },
            demo: std::env::current_exe().context("locating huntgate-demo")?,
        })
    }
}

/// Ports handed out in this process.
#[derive(Debug, Default)]
pub struct Ports(Vec<u16>);

impl Ports {
    /// A free loopback port not handed out before.
    pub fn take(&mut self) -> anyhow::Result<u16> {
        free_port(&mut self.0)
    }
}

/// redis-server (the harness's) with a small maxmemory and no eviction.
pub struct Redis {
    /// `redis://127.0.0.1:PORT`.
    pub url: String,
    _server: huntgate_harness::redis::RedisServer,
}

impl Redis {
    /// Starts it with `maxmemory` bytes.
    pub fn start(ports: &mut Ports, maxmemory: u64) -> anyhow::Result<Self> {
        let port = ports.take()?;
        let server = tokio::task::block_in_place(|| {
            huntgate_harness::redis::RedisServer::try_start_on(port, &maxmemory.to_string())
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Self {
            url: server.url(),
            _server: server,
        })
    }

    /// Empties it and waits until its memory use settles.
    pub async fn flush(&self) -> anyhow::Result<()> {
        let client = redis::Client::open(self.url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let () = redis::cmd("FLUSHALL").query_async(&mut conn).await?;
        let () = redis::cmd("MEMORY")
            .arg("PURGE")
            .query_async(&mut conn)
            .await
            .unwrap_or(());
        Ok(())
    }
}

/// A tansu Kafka broker (the harness's) with sqlite storage in its own directory.
pub struct Tansu {
    /// `127.0.0.1:PORT`.
    pub brokers: String,
    _broker: huntgate_harness::tansu::Tansu,
}

impl Tansu {
    /// Starts it with `dir/tansu` as working directory (the sqlite path is relative to it).
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        let dir = dir.join("tansu");
        let broker = tokio::task::block_in_place(|| huntgate_harness::tansu::Tansu::start(&dir))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Self {
            brokers: broker.brokers.clone(),
            _broker: broker,
        })
    }

    /// Creates `topic` with one partition.
    pub async fn create_topic(&self, topic: &str) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()
            .context("Kafka admin client")?;
        let results = admin
            .create_topics(
                &[NewTopic::new(topic, 1, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .context("creating topic")?;
        for r in results {
            r.map_err(|(t, e)| anyhow::anyhow!("creating topic {t}: {e}"))?;
        }
        Ok(())
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The processes of one run.
pub struct RunStack {
    /// Public listener of Envoy.
    pub public: SocketAddr,
    /// Envoy's admin API.
    pub admin: SocketAddr,
    // Dropped in declaration order: Envoy first, then the governor, then the service.
    envoy: ChildGuard,
    governor: Option<ChildGuard>,
    service: ChildGuard,
}

/// The topic a run's events go to.
pub fn topic_of(kind: RunKind) -> String {
    match kind {
        RunKind::Huntgate => "hunt-001-events".to_string(),
        other => format!("hunt-001-events-{}", other.id()),
    }
}

/// Consumer group of the scorers.
pub const GROUP: &str = "hunt-001-scorers";

impl RunStack {
    /// Starts the hunt service, the governor (run c) and Envoy for `kind`.
    pub async fn start(
        kind: RunKind,
        scenario: &Scenario,
        tools: &Tools,
        ports: &mut Ports,
        dir: &Path,
        redis: &Redis,
        kafka: &Tansu,
    ) -> anyhow::Result<Self> {
        let dir = dir.join(format!("run-{}", kind.id()));
        std::fs::create_dir_all(&dir)?;
        let topic = topic_of(kind);
        kafka.create_topic(&topic).await?;

        let service_port = ports.take()?;
        let mut cmd = Command::new(&tools.demo);
        cmd.arg("service")
            .args(["--listen", &loopback(service_port).to_string()])
            .args(["--redis", &redis.url, "--kafka", &kafka.brokers])
            .args(["--topic", &topic, "--group", GROUP])
            .args(["--scorer-rate", &scenario.scorer_rate.to_string()])
            .args(["--session-bytes", &scenario.session_bytes.to_string()])
            .args(["--session-ttl-s", &scenario.session_ttl_s.to_string()]);
        if kind == RunKind::Legacy {
            cmd.arg("--hunt-config")
                .arg(tools.root.join("demo/hunt-config.yml"));
        }
        let mut service = ChildGuard::spawn("hunt service", cmd, Some(&dir.join("service.log")))?;
        wait_listening(&mut service, loopback(service_port), START_TIMEOUT).await?;

        let (governor, governor_port) = if kind == RunKind::Huntgate {
            let (guard, port) = start_governor(scenario, tools, ports, &dir, redis, kafka).await?;
            (Some(guard), port)
        } else {
            (None, 0)
        };

        let public_port = ports.take()?;
        let admin_port = ports.take()?;
        let template = if kind == RunKind::Huntgate {
            "huntgate.yaml"
        } else {
            "plain.yaml"
        };
        let text = std::fs::read_to_string(tools.root.join("envoy/demo").join(template))
            .with_context(|| format!("reading envoy/demo/{template}"))?;
        let mut values = BTreeMap::from([
            ("admin_port", admin_port.to_string()),
            ("listener_port", public_port.to_string()),
            ("service_port", service_port.to_string()),
        ]);
        if kind == RunKind::Huntgate {
            values.insert("governor_port", governor_port.to_string());
            values.insert("wasm", quoted(&tools.wasm.to_string_lossy()));
            values.insert(
                "plugin_config",
                quoted(&plugin_config(scenario).to_string()),
            );
        }
        let config = dir.join("envoy.yaml");
        std::fs::write(&config, render(&text, &values)?)?;
        let mut cmd = Command::new(&tools.envoy);
        cmd.args(huntgate_harness::envoy::args(&config, 2, "warning"))
            .current_dir(&dir);
        let mut envoy = ChildGuard::spawn("envoy", cmd, Some(&dir.join("envoy.log")))?;
        let public = loopback(public_port);
        let admin = loopback(admin_port);
        tokio::task::block_in_place(|| {
            huntgate_harness::envoy::wait_ready(envoy.guard(), admin, Some(public), START_TIMEOUT)
        })
        .map_err(|e| anyhow::anyhow!("{e}; log tail:\n{}", envoy.log_tail(30)))?;
        let mut stack = Self {
            public,
            admin,
            envoy,
            governor,
            service,
        };
        if kind == RunKind::Huntgate {
            stack.wait_governed().await?;
        }
        Ok(stack)
    }

    /// Waits until Envoy's filter has fetched the governor's document once.
    async fn wait_governed(&mut self) -> anyhow::Result<()> {
        let http = Http::new(Duration::from_secs(2));
        let url = format!(
            "http://{}/stats?filter=huntgate_governor_fetch_ok",
            self.admin
        );
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            self.check()?;
            if let Ok(text) = http.get_text(&url).await {
                let fetched = text
                    .lines()
                    .filter_map(|l| l.split_once(": "))
                    .any(|(_, v)| v.trim().parse::<u64>().is_ok_and(|n| n > 0));
                if fetched {
                    return Ok(());
                }
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "Envoy did not fetch the governor's document within {START_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Fails if one of the run's processes exited.
    pub fn check(&mut self) -> anyhow::Result<()> {
        self.envoy.check_running()?;
        self.service.check_running()?;
        if let Some(g) = &mut self.governor {
            g.check_running()?;
        }
        Ok(())
    }
}

/// huntgate's plugin configuration for the demo.
pub fn plugin_config(scenario: &Scenario) -> serde_json::Value {
    serde_json::json!({
        "mode": "enforce",
        "hunt": {"path_prefix": "/hunts/"},
        "hunter": {"header": crate::service::HUNTER_HEADER},
        "session_ttl_s": scenario.session_ttl_s,
        "ticket_secrets": ["demo-ticket-secret-0123456789"],
        "max_hunters": scenario.max_hunters,
        "hunts": {"hunt-001": {}},
        "reject": {"status": 429, "retry_after_s": scenario.retry_after_s},
        // The hunt service ends a finished hunter's session with this header.
        "session_end": {"header": crate::service::SESSION_END_HEADER},
        "governor": {
            "cluster": "governor",
            "poll_interval_ms": 1000,
            "long_poll_s": 25,
            "max_stale_s": 30,
            "on_stale": {"ratio": 1.0}
        }
    })
}

async fn start_governor(
    scenario: &Scenario,
    tools: &Tools,
    ports: &mut Ports,
    dir: &Path,
    redis: &Redis,
    kafka: &Tansu,
) -> anyhow::Result<(ChildGuard, u16)> {
    let policies = dir.join("policies");
    std::fs::create_dir_all(policies.join("hunts"))?;
    let source = tools.root.join("demo/policies");
    std::fs::copy(source.join("defaults.yaml"), policies.join("defaults.yaml"))
        .context("copying demo/policies/defaults.yaml")?;
    let hunt = std::fs::read_to_string(source.join("hunts/hunt-001.yaml"))
        .context("reading demo/policies/hunts/hunt-001.yaml")?;
    let values = BTreeMap::from([
        ("max_hunters", scenario.max_hunters.to_string()),
        (
            "min_hunters",
            scenario.min_hunters.min(scenario.max_hunters).to_string(),
        ),
    ]);
    std::fs::write(
        policies.join("hunts/hunt-001.yaml"),
        render(&hunt, &values)?,
    )?;
    let port = ports.take()?;
    let mut cmd = huntgate_harness::governor::serve_command(
        &tools.governor,
        &policies,
        loopback(port),
        "warn",
    );
    cmd.args(["--redis", &format!("main={}", redis.url)])
        .args(["--kafka", &kafka.brokers]);
    let mut guard = ChildGuard::spawn("huntgate-governor", cmd, Some(&dir.join("governor.log")))?;
    tokio::task::block_in_place(|| {
        huntgate_harness::governor::wait_ready(guard.guard(), loopback(port), START_TIMEOUT)
    })
    .map_err(|e| anyhow::anyhow!("{e}; log tail:\n{}", guard.log_tail(30)))?;
    Ok((guard, port))
}
