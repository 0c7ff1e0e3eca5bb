//! `wg-bench`: the Rust half of the benchmarks in `bench/` (see `bench/README.md`).
//!
//! - `populate` fills a store (SQLite or PostgreSQL URL) with live and closed sessions: the live
//!   ones through [`wg_store::Store::insert_session`], the closed ones with batched multi-row
//!   `INSERT`s in large transactions (the public API commits one row per transaction, which takes
//!   too long for a million rows), over the schema the store's own migrations created.
//! - `latency` times sequential `GET /api/v1/sessions` requests over one keep-alive connection
//!   and prints p50/p90/p99 per query.
//! - `store-list` times `Store::list_sessions` itself (no HTTP) at several page sizes.
//! - `russh-relay` is the bare russh relay that `ssh_throughput.sh` times keystrokes through, as
//!   the floor of any relay built on russh (see [`russh_relay`]).
//!
//! Benchmarks report figures; nothing here asserts a timing.

mod latency;
mod populate;
mod russh_relay;
mod store_list;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Benchmark tools for Wardengate.
#[derive(Debug, Parser)]
#[command(name = "wg-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Fill a store with live and closed sessions.
    Populate(populate::PopulateArgs),
    /// Time GET /api/v1/sessions requests.
    Latency(latency::LatencyArgs),
    /// Time Store::list_sessions itself at several page sizes.
    StoreList(store_list::StoreListArgs),
    /// Serve the bare russh relay (latency peer of the gateway; loopback only).
    RusshRelay(russh_relay::RusshRelayArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WARDENGATE_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,russh=warn,sqlx=warn")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    // The relay runs on one thread, as each of the gateway's connections does.
    let mut builder = match cli.command {
        Command::RusshRelay(_) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wg-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Populate(a) => populate::run(a).await,
            Command::Latency(a) => latency::run(a).await,
            Command::StoreList(a) => store_list::run(a).await,
            Command::RusshRelay(a) => russh_relay::run(a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wg-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
