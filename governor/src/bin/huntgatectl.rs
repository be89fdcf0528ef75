//! `huntgatectl`: the operator's command line over the governor's gRPC API.
//! Exit status: 0 ok, 1 other failure, 2 usage, 3 governor unavailable, 4 not allowed
//! (token), 5 hunt not found, 6 input refused (see `huntgate_governor::ctl`).

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use huntgate_governor::ctl;
use huntgate_governor::grpc::pb;
use huntgate_governor::grpc::pb::governor_client::GovernorClient;
use tonic::transport::{Channel, Endpoint};

/// Time allowed to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed per call (not for `watch`).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Parser)]
#[command(
    name = "huntgatectl",
    version,
    about = "Read and steer huntgate hunts through the governor's gRPC API",
    after_help = "Exit status: 0 ok, 1 other failure, 2 usage, 3 governor unavailable, \
                  4 not allowed (token), 5 hunt not found, 6 input refused."
)]
struct Cli {
    /// The governor's gRPC address (`--grpc-listen`, or `--grpc-read-listen` for reads).
    #[arg(
        long,
        env = "HUNTGATE_GRPC_ADDR",
        default_value = "http://127.0.0.1:9912",
        global = true
    )]
    addr: String,
    /// File holding the bearer token for mutations (the last word of its first line that
    /// is not a comment, so the governor's own `NAME TOKEN` file works).
    #[arg(long, env = "HUNTGATE_TOKEN_FILE", global = true)]
    token_file: Option<std::path::PathBuf>,
    /// Print the API's messages as JSON (one document per line) instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// `--mode` of `set`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    /// The control law runs (a policy file's pin is set aside).
    Governed,
    /// The ratio is `--pin`.
    Pinned,
    /// The ratio is 1.0.
    Open,
    /// The ratio is 0: nobody new is admitted.
    Closed,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Table of every hunt: limit, max, ratio, reason, active, signals, stale, shares,
    /// override.
    Status,
    /// The status table, refreshed in place at every change (a line per change when not a
    /// terminal, or with --json).
    Watch {
        /// Only these hunts.
        hunts: Vec<String>,
    },
    /// Why HUNT's limit is what it is: each signal against its thresholds, the law's last
    /// steps, the policy, start and override behind it.
    Explain {
        /// The hunt.
        hunt: String,
    },
    /// Sets HUNT's override (replacing any previous one).
    Set {
        /// The hunt.
        hunt: String,
        /// New max_hunters.
        #[arg(long)]
        max_hunters: Option<u32>,
        /// New min_hunters.
        #[arg(long)]
        min_hunters: Option<u32>,
        /// How the ratio is driven.
        #[arg(long, value_enum)]
        mode: Option<ModeArg>,
        /// The pinned ratio, in [0, 1].
        #[arg(long)]
        pin: Option<f64>,
        /// The override lapses after this many seconds.
        #[arg(long)]
        ttl_s: Option<u32>,
        /// Why (required; audited).
        #[arg(long)]
        reason: String,
    },
    /// Pins HUNT's ratio (an override with mode pinned).
    Pin {
        /// The hunt.
        hunt: String,
        /// The ratio, in [0, 1].
        ratio: f64,
        /// The pin lapses after this many seconds.
        #[arg(long)]
        ttl_s: Option<u32>,
        /// Why (required; audited).
        #[arg(long)]
        reason: String,
    },
    /// Clears HUNT's override (pin included): the policy applies again.
    #[command(alias = "clear")]
    Unpin {
        /// The hunt.
        hunt: String,
        /// Why (required; audited).
        #[arg(long)]
        reason: String,
    },
    /// Governs HUNT before its players arrive.
    Start {
        /// The hunt.
        hunt: String,
        /// Its capacity (default: the default policy's).
        #[arg(long)]
        max_hunters: Option<u32>,
        /// Its floor.
        #[arg(long)]
        min_hunters: Option<u32>,
        /// Why (required; audited).
        #[arg(long)]
        reason: String,
    },
    /// Ends HUNT: out of the document, its override and start forgotten.
    End {
        /// The hunt.
        hunt: String,
        /// Why (required; audited).
        #[arg(long)]
        reason: String,
    },
    /// The audit log of mutations, newest first.
    Audit {
        /// Only this hunt.
        #[arg(long)]
        hunt: Option<String>,
        /// At most this many entries.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

/// A failure with its exit status.
struct Failure {
    code: u8,
    message: String,
}

impl From<tonic::Status> for Failure {
    fn from(s: tonic::Status) -> Self {
        Self {
            code: ctl::exit_code(s.code()),
            message: format!("{:?}: {}", s.code(), s.message()),
        }
    }
}

fn failed(code: u8, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

fn now_ms() -> i64 {
    use huntgate_governor::clock::Clock as _;
    i64::try_from(huntgate_governor::clock::SystemClock.now_ms()).unwrap_or(i64::MAX)
}

fn token(path: Option<&std::path::Path>) -> Result<Option<String>, Failure> {
    let Some(path) = path else { return Ok(None) };
    let text = std::fs::read_to_string(path).map_err(|e| {
        failed(
            ctl::EXIT_FAILED,
            format!("--token-file {}: {e}", path.display()),
        )
    })?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .and_then(|l| l.split_whitespace().last())
        .map(|t| Some(t.to_owned()))
        .ok_or_else(|| {
            failed(
                ctl::EXIT_FAILED,
                format!("--token-file {}: no token", path.display()),
            )
        })
}

async fn connect(
    addr: &str,
    timeout: Option<Duration>,
) -> Result<GovernorClient<Channel>, Failure> {
    let mut endpoint = Endpoint::from_shared(addr.to_owned())
        .map_err(|e| failed(ctl::EXIT_USAGE, format!("--addr `{addr}`: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT);
    if let Some(t) = timeout {
        endpoint = endpoint.timeout(t);
    }
    let channel = endpoint.connect().await.map_err(|e| {
        failed(
            ctl::EXIT_UNAVAILABLE,
            format!("cannot reach the governor at {addr}: {e}"),
        )
    })?;
    Ok(GovernorClient::new(channel))
}

fn authorized<T>(message: T, token: Option<&str>) -> Result<tonic::Request<T>, Failure> {
    let mut request = tonic::Request::new(message);
    if let Some(t) = token {
        let value = format!("Bearer {t}")
            .parse()
            .map_err(|_| failed(ctl::EXIT_FAILED, "the token is not a valid header value"))?;
        request.metadata_mut().insert("authorization", value);
    }
    Ok(request)
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<(), Failure> {
    let text = serde_json::to_string(value).map_err(|e| failed(ctl::EXIT_FAILED, e.to_string()))?;
    println!("{text}");
    Ok(())
}

fn print_hunt(hunt: &pb::Hunt, json: bool) -> Result<(), Failure> {
    if json {
        print_json(hunt)
    } else {
        print!("{}", ctl::explain(hunt, now_ms()));
        Ok(())
    }
}

async fn watch(cli: &Cli, hunts: &[String]) -> Result<(), Failure> {
    let mut client = connect(&cli.addr, None).await?;
    let mut stream = client
        .watch_hunts(pb::WatchHuntsRequest {
            since_version: 0,
            hunts: hunts.to_vec(),
        })
        .await?
        .into_inner();
    let in_place = !cli.json && std::io::stdout().is_terminal();
    while let Some(update) = stream.message().await? {
        if cli.json {
            print_json(&update)?;
        } else {
            let table = ctl::status(
                &update.hunts,
                update.version,
                update.default_ratio,
                now_ms(),
            );
            let mut out = std::io::stdout().lock();
            if in_place {
                let _ = write!(out, "\x1b[H\x1b[2J");
            }
            let _ = writeln!(out, "{table}");
            let _ = out.flush();
        }
    }
    Err(failed(
        ctl::EXIT_UNAVAILABLE,
        "the governor closed the stream",
    ))
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let token = token(cli.token_file.as_deref())?;
    let token = token.as_deref();
    if let Command::Watch { hunts } = &cli.command {
        return watch(&cli, hunts).await;
    }
    let mut client = connect(&cli.addr, Some(CALL_TIMEOUT)).await?;
    match &cli.command {
        Command::Watch { .. } => Ok(()),
        Command::Status => {
            let list = client
                .list_hunts(pb::ListHuntsRequest {})
                .await?
                .into_inner();
            if cli.json {
                print_json(&list)
            } else {
                print!(
                    "{}",
                    ctl::status(&list.hunts, list.version, list.default_ratio, now_ms())
                );
                Ok(())
            }
        }
        Command::Explain { hunt } => {
            let hunt = client
                .get_hunt(pb::GetHuntRequest { hunt: hunt.clone() })
                .await?
                .into_inner();
            print_hunt(&hunt, cli.json)
        }
        Command::Set {
            hunt,
            max_hunters,
            min_hunters,
            mode,
            pin,
            ttl_s,
            reason,
        } => {
            let mode = match mode {
                None => pb::Mode::Unspecified,
                Some(ModeArg::Governed) => pb::Mode::Governed,
                Some(ModeArg::Pinned) => pb::Mode::Pinned,
                Some(ModeArg::Open) => pb::Mode::Open,
                Some(ModeArg::Closed) => pb::Mode::Closed,
            };
            let request = pb::SetOverrideRequest {
                hunt: hunt.clone(),
                max_hunters: *max_hunters,
                min_hunters: *min_hunters,
                pin_ratio: *pin,
                mode: mode as i32,
                reason: reason.clone(),
                ttl_s: *ttl_s,
            };
            let hunt = client
                .set_override(authorized(request, token)?)
                .await?
                .into_inner();
            print_hunt(&hunt, cli.json)
        }
        Command::Pin {
            hunt,
            ratio,
            ttl_s,
            reason,
        } => {
            let request = pb::SetOverrideRequest {
                hunt: hunt.clone(),
                pin_ratio: Some(*ratio),
                mode: pb::Mode::Pinned as i32,
                reason: reason.clone(),
                ttl_s: *ttl_s,
                ..pb::SetOverrideRequest::default()
            };
            let hunt = client
                .set_override(authorized(request, token)?)
                .await?
                .into_inner();
            print_hunt(&hunt, cli.json)
        }
        Command::Unpin { hunt, reason } => {
            let request = pb::ClearOverrideRequest {
                hunt: hunt.clone(),
                reason: reason.clone(),
            };
            let hunt = client
                .clear_override(authorized(request, token)?)
                .await?
                .into_inner();
            print_hunt(&hunt, cli.json)
        }
        Command::Start {
            hunt,
            max_hunters,
            min_hunters,
            reason,
        } => {
            let request = pb::StartHuntRequest {
                hunt: hunt.clone(),
                max_hunters: *max_hunters,
                min_hunters: *min_hunters,
                reason: reason.clone(),
            };
            let hunt = client
                .start_hunt(authorized(request, token)?)
                .await?
                .into_inner();
            print_hunt(&hunt, cli.json)
        }
        Command::End { hunt, reason } => {
            let request = pb::EndHuntRequest {
                hunt: hunt.clone(),
                reason: reason.clone(),
            };
            let ended = client
                .end_hunt(authorized(request, token)?)
                .await?
                .into_inner();
            if cli.json {
                print_json(&ended)
            } else {
                let file = if ended.policy_file {
                    " (its policy file stays: it is out of the document until `start`)"
                } else {
                    ""
                };
                println!("hunt {} ended{file}", ended.hunt);
                Ok(())
            }
        }
        Command::Audit { hunt, limit } => {
            let request = pb::ListAuditRequest {
                hunt: hunt.clone().unwrap_or_default(),
                limit: *limit,
            };
            let entries = client.list_audit(request).await?.into_inner();
            if cli.json {
                print_json(&entries)
            } else {
                print!("{}", ctl::audit(&entries.entries, now_ms()));
                Ok(())
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("huntgatectl: tokio runtime: {e}");
            return ExitCode::from(ctl::EXIT_FAILED);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("huntgatectl: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
