//! `wardengate`: the Wardengate server.
//!
//! `wardengate dev --data-dir DIR` runs a control plane and a gateway in one process on an
//! embedded SQLite store, with a bootstrap admin and a built-in demo SSH target. The gateway
//! talks to the control plane over the same gRPC protocol a standalone gateway uses.
//! `wardengate control --config FILE` and `wardengate gateway --config FILE` run the same parts
//! as separate processes of a cluster.

mod demo;
mod dev;
mod keys;
mod standalone;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The Wardengate privileged-access gateway.
#[derive(Debug, Parser)]
#[command(name = "wardengate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Control plane + gateway + demo target in one process, on SQLite in a data directory.
    #[command(after_help = "Example:\n  wardengate dev --data-dir ./.wardengate-dev")]
    Dev(dev::DevArgs),
    /// A control-plane replica (REST API, gateway gRPC, leases) on a shared store.
    #[command(after_help = "Example:\n  wardengate control --config examples/control.yaml")]
    Control(standalone::ConfigArgs),
    /// A standalone gateway: joins with a one-time token, then serves SSH.
    #[command(after_help = "Example:\n  wardengate gateway --config examples/gateway.yaml")]
    Gateway(standalone::ConfigArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WARDENGATE_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,russh=warn,sqlx=warn")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wardengate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Dev(args) => dev::run(args).await,
            Command::Control(args) => standalone::run_control(args).await,
            Command::Gateway(args) => standalone::run_gateway(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wardengate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
