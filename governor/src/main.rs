//! `huntgate-governor`: the binary edge (CLI, logging, signals, anyhow).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use huntgate_governor::clock::SystemClock;
use huntgate_governor::legacy::{import_legacy, LegacyTarget};
use huntgate_governor::policy::compile::load_dir;
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
    Serve(ServeArgs),
    /// Validate a policy directory and exit (0: valid; 1: the error names file and field).
    Check(PolicyArgs),
    /// Convert a legacy hunt-config.yml (`max_concurrent_hunters`) to a policy file.
    ImportLegacy(ImportArgs),
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
    /// Address to listen on.
    #[arg(long, env = "HUNTGATE_LISTEN", default_value = "127.0.0.1:9911")]
    listen: SocketAddr,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `huntgate_governor=debug`.
    #[arg(long, env = "HUNTGATE_LOG", default_value = "info")]
    log: String,
}

#[derive(Debug, Clone, Args)]
struct ImportArgs {
    /// The legacy hunt-config.yml.
    file: PathBuf,
    /// Write a `policies/hunts/<HUNT>.yaml` for this hunt instead of a defaults.yaml.
    #[arg(long)]
    hunt: Option<String>,
    /// Write to this file instead of stdout.
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
}

impl PolicyArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            redis: self.redis.clone(),
            kafka_brokers: self.kafka.clone(),
        }
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => run(cli.serve),
        Some(Command::Serve(args)) => run(args),
        Some(Command::Check(args)) => check(&args),
        Some(Command::ImportLegacy(args)) => import(&args),
    }
}

fn run(args: ServeArgs) -> Result<()> {
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log)
                .with_context(|| format!("--log `{}`", args.log))?,
        )
        .with_writer(std::io::stderr)
        .init();
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
            listen: args.listen,
        };
        serve(
            config,
            Arc::new(SystemClock),
            Arc::new(RealSources),
            stop_rx,
            |addr| println!("listening on {addr}"),
        )
        .await
        .context("huntgate-governor")
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
    let policy = load_dir(&args.policies, &args.overrides())?;
    println!(
        "{}: valid ({} hunts, {} signals bound)",
        args.policies.display(),
        policy.hunts.len(),
        policy.bound_signals().len()
    );
    Ok(())
}

fn import(args: &ImportArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let target = match &args.hunt {
        Some(h) => match huntgate_core::hunt_id::normalize_hunt_id(h) {
            Ok(id) => LegacyTarget::Hunt(id),
            Err(_) => bail!("--hunt `{h}` is not a hunt id (1-64 characters of [A-Za-z0-9._-])"),
        },
        None => LegacyTarget::Defaults,
    };
    let policy = import_legacy(&text, &target).with_context(|| args.file.display().to_string())?;
    match &args.output {
        Some(out) => std::fs::write(out, policy)
            .with_context(|| format!("cannot write {}", out.display()))?,
        None => print!("{policy}"),
    }
    Ok(())
}
