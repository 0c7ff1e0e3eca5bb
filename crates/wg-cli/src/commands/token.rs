//! `wgctl token create`.

use reqwest::Method;
use wg_domain::api::{TokenCreateRequest, TokenCreated};

use super::emit;
use crate::cli::{ShowFormat, TokenCmd};
use crate::client::{ApiClient, api_path};
use crate::error::{CliError, exit};
use crate::render;

pub(super) async fn run(client: &ApiClient, cmd: TokenCmd) -> Result<u8, CliError> {
    match cmd {
        TokenCmd::Create(args) => {
            let body = TokenCreateRequest {
                principal: args.principal,
            };
            let created: TokenCreated = client
                .send(Method::POST, &api_path(&["tokens"]), &body)
                .await?;
            match args.output {
                ShowFormat::Text => {
                    emit(&render::token_created(&created))?;
                    eprint!("{}", render::token_notice(&created));
                }
                ShowFormat::Json => emit(&render::json(&created)?)?,
            }
            Ok(exit::OK)
        }
    }
}
