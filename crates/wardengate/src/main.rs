//! `wardengate`: the Wardengate server.
//!
//! `wardengate dev --data-dir DIR` runs a control plane and a gateway in one process on an
//! embedded SQLite store, with a bootstrap admin and a built-in demo SSH target. The gateway
//! talks to the control plane over the same gRPC protocol a standalone gateway uses.

mod demo;
mod dev;
mod keys;

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
