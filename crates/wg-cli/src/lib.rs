//! `wgctl`, the Wardengate operator CLI, as a library: the binary is `wg_cli::main()`.
//!
//! It speaks only the control plane's REST API (`/api/v1`), over plain HTTP, at `WGCTL_ADDR`
//! (or `--addr`; default `http://127.0.0.1:8080`) with the bearer token `WGCTL_TOKEN` (or
//! `--token`).
//!
//! - [`cli`]: the command line (clap), with every value checked before a request is sent;
//! - [`client`]: the HTTP client and the mapping of API errors to [`CliError`];
//! - [`render`]: pure functions from API shapes to the printed text (the seed's layouts);
//! - one private module per command group (`session`, `apply`/`get`/`delete`, `vault`,
//!   `recording`, `audit`, `limits`, `token`).
//!
//! # Exit codes
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | other failure, including a recording or audit chain that does not verify |
//! | 2 | bad request or usage error |
//! | 3 | not found |
//! | 4 | denied (`unauthorized`, `forbidden`, `policy_denied`, `concurrency_limit`, `handoff_expired`) |
//! | 5 | control plane unreachable (connection refused, timeout, HTTP 503) |
//!
//! A failure prints one line on stderr: `wgctl: <message>`.

use std::process::ExitCode;

use clap::Parser;

pub mod cli;
pub mod client;
mod commands;
pub mod error;
#[cfg(test)]
mod golden_tests;
pub mod render;

pub use error::{CliError, exit};

/// Parses the command line, runs the command and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and exit 0; usage errors exit 2.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(exit::USAGE));
        }
    };
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprint!("{}", render::error_line(&e));
            e.exit_code()
        }
    };
    ExitCode::from(code)
}

/// Runs a parsed command line to completion on a single-threaded runtime.
///
/// # Errors
/// The command's [`CliError`].
pub fn run(cli: cli::Cli) -> Result<u8, CliError> {
    let client = client::ApiClient::new(&cli.control_url(), cli.bearer_token().as_deref())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(commands::run(&client, cli.command))
}
