//! One module per command group. Each command fetches through [`ApiClient`], renders with
//! [`crate::render`] and writes to standard output; it returns the exit code of a completed
//! command (non-zero only for a failed verification) or a [`CliError`].

use std::io::Write;

use crate::cli::Command;
use crate::client::ApiClient;
use crate::error::CliError;

mod audit;
mod gateway;
mod limits;
mod recording;
mod resources;
mod session;
mod token;
mod vault;

/// Runs one parsed command against the control plane.
pub(crate) async fn run(client: &ApiClient, command: Command) -> Result<u8, CliError> {
    match command {
        Command::Session(cmd) => session::run(client, cmd).await,
        Command::Apply(args) => resources::apply(client, args).await,
        Command::Get(args) => resources::get(client, args).await,
        Command::Delete(args) => resources::delete(client, args).await,
        Command::Vault(cmd) => vault::run(client, cmd).await,
        Command::Recording(cmd) => recording::run(client, cmd).await,
        Command::Audit(cmd) => audit::run(client, cmd).await,
        Command::Limits(cmd) => limits::run(client, cmd).await,
        Command::Token(cmd) => token::run(client, cmd).await,
        Command::Gateway(cmd) => gateway::run(client, cmd).await,
    }
}

/// Writes `text` to standard output. A closed pipe (`wgctl … | head`) is not an error.
pub(crate) fn emit(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::Failed(format!("cannot write output: {e}"))),
    }
}
