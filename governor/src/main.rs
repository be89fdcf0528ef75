//! `huntgate-governor`: the binary edge (CLI, logging, signals, anyhow).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use huntgate_governor::clock::SystemClock;
use huntgate_governor::grpc::GrpcConfig;
use huntgate_governor::legacy::{check_output, import_legacy, LegacyTarget};
use huntgate_governor::listener::{fd_budget, open_file_limit, Limits};
use huntgate_governor::operator::store::OperatorStore;
use huntgate_governor::persist::{FileStore, StateStore};
use huntgate_governor::policy::compile::compile;
use huntgate_governor::policy::tree::PolicyTree;
use huntgate_governor::policy::{Overrides, RedisOverride};
use huntgate_governor::serve::{serve, ServeConfig};
use huntgate_governor::sources::RealSources;
use tokio::sync::watch;

/// Turns Redis memory and Kafka lag into per-hunt throttle ratios for the huntgate filter.
#[derive(Debug, Parser)]
#[command(
    name = "huntgate-governor",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the governor (the default when no subcommand is given).
    Serve(Box<ServeArgs>),
    /// Validate a policy directory and exit (0: valid; 1: the error names file and field).
    Check(PolicyArgs),
    /// Convert a legacy hunt-config.yml (`max_concurrent_hunters`) to a policy file.
    ImportLegacy(ImportArgs),
    /// The install guard: check rendered manifests (`kubectl kustomize DIR`
    /// output, a file or a directory of YAML files) and exit 1 naming each
    /// object at fault (a filter without its governor or the reverse, a wrong
    /// governor cluster, an invalid pluginConfig, inline secrets, leases without
    /// a coordinating governor, no failStrategy).
    CheckManifests(ManifestArgs),
}

#[derive(Debug, Clone, Args)]
struct ManifestArgs {
    /// A YAML file (`-` for standard input) or a directory of them.
    path: PathBuf,
    /// Report inline ticket secrets as warnings instead of errors.
    #[arg(long)]
    allow_inline_secrets: bool,
}

#[derive(Debug, Clone, Args)]
struct PolicyArgs {
    /// Policy directory (defaults.yaml, hunts/*.yaml).
    #[arg(long, env = "HUNTGATE_POLICIES", default_value = "policies")]
    policies: PathBuf,
    /// Redis endpoint override, `[NAME=]URL`; without NAME it replaces every endpoint's
    /// URL (or adds `main`). Repeatable.
    #[arg(long = "redis", env = "HUNTGATE_REDIS", value_delimiter = ' ')]
    redis: Vec<RedisOverride>,
    /// Kafka brokers override, `host:port[,host:port…]`.
    #[arg(long = "kafka", env = "HUNTGATE_KAFKA")]
    kafka: Option<String>,
}

#[derive(Debug, Clone, Args)]
struct ServeArgs {
    #[command(flatten)]
    policy: PolicyArgs,
    /// Address to listen on, `HOST:PORT` (a host name such as `localhost` is resolved).
    #[arg(long, env = "HUNTGATE_LISTEN", default_value = "127.0.0.1:9911")]
    listen: String,
    /// A second address serving only /healthz, /readyz and /metrics (for probes).
    #[arg(long, env = "HUNTGATE_PROBE_LISTEN")]
    probe_listen: Option<String>,
    /// Directory of the saved control state (`governor-state.json`); without it a restart
    /// starts every hunt at ratio 1.0.
    #[arg(long, env = "HUNTGATE_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// The coordination Redis, `redis://HOST:PORT[/DB]`: two or more governor replicas
    /// keep one lease allocation there (compare-and-set), so together they never grant
    /// more than a hunt's fleet limit. Without it the allocation lives in this process:
    /// run a single replica then. An empty value means none.
    #[arg(long, env = "HUNTGATE_COORDINATION")]
    coordination: Option<String>,
    /// This replica's name in the coordination Redis (default: `$HOSTNAME-<pid>`, in
    /// Kubernetes the pod name, else one made from the process id and the start time).
    /// Replicas must have different names.
    #[arg(long, env = "HUNTGATE_REPLICA_ID")]
    replica_id: Option<String>,
    /// Address of the gRPC API, `HOST:PORT` (every method; mutations need a token from
    /// `--grpc-token-file`). Unset: no gRPC API.
    #[arg(long, env = "HUNTGATE_GRPC_LISTEN")]
    grpc_listen: Option<String>,
    /// Address of a read-only gRPC listener (GetHunt, ListHunts, WatchHunts, ListAudit,
    /// health, reflection; mutations answer PERMISSION_DENIED there).
    #[arg(long, env = "HUNTGATE_GRPC_READ_LISTEN")]
    grpc_read_listen: Option<String>,
    /// File of the bearer tokens that may mutate (`NAME TOKEN` per line; re-read when it
    /// changes). Unset: every mutation answers PERMISSION_DENIED.
    #[arg(long, env = "HUNTGATE_GRPC_TOKEN_FILE")]
    grpc_token_file: Option<PathBuf>,
    /// Most API connections at once (lowered to fit the open-file limit).
    #[arg(long, env = "HUNTGATE_MAX_CONNECTIONS", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_connections: u32,
    /// Seconds a client has to send a complete request head.
    #[arg(long, env = "HUNTGATE_HEADER_TIMEOUT_S", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=300))]
    header_timeout_s: u64,
    /// Seconds a keep-alive connection may stay idle between requests.
    #[arg(long, env = "HUNTGATE_IDLE_TIMEOUT_S", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    idle_timeout_s: u64,
    /// Seconds a shutdown waits for in-flight requests before closing every connection.
    #[arg(long, env = "HUNTGATE_DRAIN_TIMEOUT_S", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(0..=300))]
    drain_timeout_s: u64,
    /// Log filter: a level (`error`, `warn`, `info`, `debug`, `trace`, `off`) or
    /// comma-separated `TARGET=LEVEL` directives (tracing EnvFilter syntax).
    #[arg(long, env = "HUNTGATE_LOG", default_value = "info")]
    log: String,
}

const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];

/// Refuses filters that EnvFilter accepts but that silently log nothing (`--log nonsense`
/// names a target and turns every other log off).
fn log_filter(spec: &str) -> Result<tracing_subscriber::EnvFilter> {
    for directive in spec.split(',').map(str::trim) {
        let level = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            bail!(
                "--log `{}`: `{}` is not a level ({}) nor a TARGET=LEVEL directive",
                huntgate_governor::text::echo(spec),
                huntgate_governor::text::echo(directive),
                LEVELS.join(", ")
            );
        }
    }
    tracing_subscriber::EnvFilter::try_new(spec)
        .with_context(|| format!("--log `{}`", huntgate_governor::text::echo(spec)))
}

/// Resolves an optional `HOST:PORT` flag (empty: none).
fn optional_addr(addr: Option<&str>, flag: &str) -> Result<Option<SocketAddr>> {
    match addr.map(str::trim) {
        None | Some("") => Ok(None),
        Some(a) => resolve(flag, a).map(Some),
    }
}

/// Resolves `HOST:PORT` (the first address, IPv4 first).
fn resolve(flag: &str, addr: &str) -> Result<SocketAddr> {
    use std::net::ToSocketAddrs as _;
    let mut all: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .with_context(|| {
            format!(
                "{flag} `{}`: not HOST:PORT",
                huntgate_governor::text::echo(addr)
            )
        })?
        .collect();
    all.sort_by_key(|a| !a.is_ipv4());
    all.into_iter().next().with_context(|| {
        format!(
            "{flag} `{}`: resolves to no address",
            huntgate_governor::text::echo(addr)
        )
    })
}

#[derive(Debug, Clone, Args)]
struct ImportArgs {
    /// The legacy hunt-config.yml.
    file: PathBuf,
    /// Write a `policies/hunts/<HUNT>.yaml` for this hunt instead of a defaults.yaml.
    #[arg(long)]
    hunt: Option<String>,
    /// Write to this file instead of stdout (never the input; an existing file only with
    /// --force; a hunt file must be named `<HUNT>.yaml`).
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
    /// Replace the -o file if it exists.
    #[arg(long)]
    force: bool,
}

impl PolicyArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            redis: self.redis.clone(),
            kafka_brokers: self.kafka.clone(),
        }
    }
}

/// `--replica-id`, else `$HOSTNAME-<pid>`, else `governor-<pid>-<start ms>`.
fn replica_id(flag: Option<&str>) -> String {
    use huntgate_governor::clock::Clock as _;
    let pid = std::process::id();
    if let Some(id) = flag.map(str::trim).filter(|s| !s.is_empty()) {
        return id.to_owned();
    }
    match std::env::var("HOSTNAME").ok().map(|h| h.trim().to_owned()) {
        Some(host) if !host.is_empty() => format!("{host}-{pid}"),
        _ => format!("governor-{pid}-{}", SystemClock.now_ms()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => run(cli.serve),
        Some(Command::Serve(args)) => run(*args),
        Some(Command::Check(args)) => check(&args),
        Some(Command::ImportLegacy(args)) => import(&args),
        Some(Command::CheckManifests(args)) => check_manifests(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The whole cause chain on one line (never a bare "Error: huntgate-governor").
            eprintln!("huntgate-governor: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: ServeArgs) -> Result<()> {
    use std::io::IsTerminal as _;
    let filter = log_filter(&args.log)?;
    let listen = resolve("--listen", &args.listen)?;
    let probe_listen = optional_addr(args.probe_listen.as_deref(), "--probe-listen")?;
    tracing_subscriber::fmt()
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let defaults = Limits::default();
    let nofile = open_file_limit();
    let (max_connections, lowered) = fd_budget(
        nofile,
        args.max_connections as usize,
        defaults.probe_connections,
    );
    if lowered {
        tracing::warn!(
            requested = args.max_connections,
            max_connections,
            open_file_limit = nofile,
            "--max-connections lowered to leave file descriptors for policy reloads and signal clients"
        );
    }
    let limits = Limits {
        header_timeout: Duration::from_secs(args.header_timeout_s),
        idle_timeout: Duration::from_secs(args.idle_timeout_s),
        max_connections,
        ..defaults
    };
    if let Some(dir) = &args.state_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--state-dir {}: cannot create", dir.display()))?;
    }
    let state: Option<Arc<dyn StateStore>> = args
        .state_dir
        .as_ref()
        .map(|d| Arc::new(FileStore::new(d)) as Arc<dyn StateStore>);
    let replica = replica_id(args.replica_id.as_deref());
    let coordination = match args.coordination.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(url) => {
            let handle = huntgate_governor::coordination::Coordination::new(url, &replica)
                .map_err(anyhow::Error::msg)?;
            Some(Arc::new(handle))
        }
    };
    let operator = match (&coordination, &args.state_dir) {
        (Some(c), _) => OperatorStore::Redis(Arc::clone(c)),
        (None, Some(dir)) => OperatorStore::File(dir.clone()),
        (None, None) => OperatorStore::Memory,
    };
    let grpc = GrpcConfig {
        listen: optional_addr(args.grpc_listen.as_deref(), "--grpc-listen")?,
        read_listen: optional_addr(args.grpc_read_listen.as_deref(), "--grpc-read-listen")?,
        token_file: args.grpc_token_file.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let result = runtime.block_on(async move {
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received: draining");
            let _ = stop_tx.send(true);
        });
        let config = ServeConfig {
            policies: args.policy.policies.clone(),
            overrides: args.policy.overrides(),
            listen,
            probe_listen,
            limits,
            drain: Duration::from_secs(args.drain_timeout_s),
            state,
            coordination,
            rescan: huntgate_governor::serve::RELOAD_POLL,
            grpc,
            operator,
            replica,
        };
        serve(
            config,
            Arc::new(SystemClock),
            Arc::new(RealSources),
            stop_rx,
            |addr| println!("listening on {addr}"),
        )
        .await
        .map_err(anyhow::Error::from)
    });
    // Kafka reads run on blocking threads; do not wait for one stuck on a dead broker.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    result
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn check(args: &PolicyArgs) -> Result<()> {
    let tree = PolicyTree::read(&args.policies)?;
    for w in &tree.warnings {
        eprintln!("warning: {w}");
    }
    let policy = compile(&tree, &args.overrides())?;
    println!(
        "{}: valid ({} hunts, {} signals bound)",
        args.policies.display(),
        policy.hunts.len(),
        policy.bound_signals().len()
    );
    Ok(())
}

fn check_manifests(args: &ManifestArgs) -> Result<()> {
    use huntgate_governor::manifests::{check, load, parse, Options};
    let objects = if args.path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("cannot read standard input")?;
        parse(&text).map_err(|e| anyhow::anyhow!("standard input: {e}"))?
    } else {
        load(&args.path).map_err(|e| anyhow::anyhow!(e))?
    };
    let options = Options {
        allow_inline_secrets: args.allow_inline_secrets,
    };
    let findings = check(&objects, options);
    for finding in &findings {
        eprintln!("{finding}");
    }
    let errors = findings.iter().filter(|f| f.fatal).count();
    if errors > 0 {
        bail!("{errors} problem(s) in {}", args.path.display());
    }
    println!(
        "{}: {} objects, huntgate installable ({} warning(s))",
        args.path.display(),
        objects.len(),
        findings.len()
    );
    Ok(())
}

fn import(args: &ImportArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let target = match &args.hunt {
        Some(h) => match huntgate_core::hunt_id::normalize_hunt_id(h) {
            Ok(id) => LegacyTarget::Hunt(id),
            Err(_) => bail!(
                "--hunt `{}` is not a hunt id (1-64 characters of [A-Za-z0-9._-])",
                huntgate_governor::text::echo(h)
            ),
        },
        None => LegacyTarget::Defaults,
    };
    if let Some(out) = &args.output {
        check_output(&args.file, out, &target, args.force)?;
    }
    let policy = import_legacy(&text, &target).with_context(|| args.file.display().to_string())?;
    match &args.output {
        Some(out) => std::fs::write(out, policy)
            .with_context(|| format!("cannot write {}", out.display()))?,
        None => print!("{policy}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_filters_that_log_nothing_are_refused() {
        for ok in [
            "info",
            "WARN",
            "huntgate_governor=debug,info",
            "warn,rdkafka=off",
        ] {
            assert!(log_filter(ok).is_ok(), "{ok}");
        }
        for bad in ["nonsense", "info,verbose", "huntgate_governor=loud", ""] {
            assert!(log_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn listen_addresses_resolve_host_names() {
        assert_eq!(
            resolve("--listen", "localhost:9911").unwrap(),
            "127.0.0.1:9911".parse::<SocketAddr>().unwrap()
        );
        let e = resolve("--listen", "9911").unwrap_err().to_string();
        assert!(e.starts_with("--listen `9911`: not HOST:PORT"), "{e}");
    }
}
