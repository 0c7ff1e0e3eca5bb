//! `wgctl limits usage`.

use wg_domain::api::LimitsUsage;

use super::emit;
use crate::cli::{LimitsCmd, ListFormat};
use crate::client::{ApiClient, api_path};
use crate::error::{CliError, exit};
use crate::render;

pub(super) async fn run(client: &ApiClient, cmd: LimitsCmd) -> Result<u8, CliError> {
    match cmd {
        LimitsCmd::Usage(args) => {
            let query = [
                ("actor", args.actor),
                ("target", args.target),
                ("policy", args.policy),
            ];
            let usage: LimitsUsage = client.get(&api_path(&["limits", "usage"]), &query).await?;
            emit(&match args.output {
                ListFormat::Table => render::limits_usage(&usage.usage),
                ListFormat::Json => render::json(&usage)?,
            })?;
            Ok(exit::OK)
        }
    }
}
