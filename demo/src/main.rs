//! `huntgate-demo`: `run` plays the spike demo; `service` is the sample hunt service it starts.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "huntgate-demo",
    about = "Replays the Hunt-001 spike three ways and writes a report"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the demo (starts every process it needs, stops them all at the end).
    Run(huntgate_demo::orchestrate::RunArgs),
    /// The sample hunt service (started by `run`, behind Envoy).
    Service(huntgate_demo::service::ServiceArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => huntgate_demo::orchestrate::run(args).await,
        Command::Service(args) => huntgate_demo::service::run(args).await,
    }
}
