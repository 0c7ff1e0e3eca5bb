//! `wgctl gateway list | token create | token list | token revoke | remove`.

use reqwest::Method;
use wg_domain::api::{GatewayList, JoinTokenCreated, JoinTokenList, JoinTokenRequest};

use super::emit;
use crate::cli::{GatewayCmd, GatewayTokenCmd, ListFormat, ShowFormat};
use crate::client::{ApiClient, api_path};
use crate::error::{CliError, exit};
use crate::render;

pub(super) async fn run(client: &ApiClient, cmd: GatewayCmd) -> Result<u8, CliError> {
    match cmd {
        GatewayCmd::List(args) => {
            let list: GatewayList = client.get(&api_path(&["gateways"]), &[]).await?;
            emit(&match args.output {
                ListFormat::Table => render::gateway_list(&list.gateways),
                ListFormat::Json => render::json(&list)?,
            })?;
        }
        GatewayCmd::Token(GatewayTokenCmd::Create(args)) => {
            let body = JoinTokenRequest {
                pool: args.pool,
                // Whole seconds, as the API takes them; `--ttl 0` or `500ms` reaches the
                // control plane as 0 and is refused there, not silently rounded up.
                ttl_seconds: args.ttl.map(|d| d.as_secs()),
            };
            let created: JoinTokenCreated = client
                .send(Method::POST, &api_path(&["gateways", "tokens"]), &body)
                .await?;
            match args.output {
                ShowFormat::Text => {
                    emit(&format!("{}\n", created.token))?;
                    eprintln!(
                        "wgctl: join token for pool {} (one use, until {}); it is shown only this once.\n\
                         wgctl: it pins the control plane's CA (sha256 {}): the gateway refuses any other",
                        created.pool, created.expires_at, created.ca_sha256
                    );
                }
                ShowFormat::Json => emit(&render::json(&created)?)?,
            }
        }
        GatewayCmd::Token(GatewayTokenCmd::List(args)) => {
            let list: JoinTokenList = client.get(&api_path(&["gateways", "tokens"]), &[]).await?;
            emit(&match args.output {
                ListFormat::Table => render::join_tokens(&list.tokens),
                ListFormat::Json => render::json(&list)?,
            })?;
        }
        GatewayCmd::Token(GatewayTokenCmd::Revoke(args)) => {
            // The token itself (as `token create` printed it) names its ID too; it is hashed
            // here, so that the secret never travels or lands in a log.
            let id = if args.id.trim().starts_with("wgj_") {
                wg_domain::ids::join_token_id(&wg_domain::ids::join_token_sha256(&args.id))
            } else {
                args.id.trim().to_owned()
            };
            let revoked: wg_domain::api::JoinTokenRevoked = client
                .send(
                    Method::POST,
                    &api_path(&["gateways", "tokens", &id, "revoke"]),
                    &serde_json::json!({}),
                )
                .await?;
            emit(&render::token_revoked(&revoked))?;
        }
        GatewayCmd::Remove(args) => {
            client.delete(&api_path(&["gateways", &args.name])).await?;
            emit(&format!(
                "gateway {} removed: its certificate is refused from now on\n",
                args.name
            ))?;
        }
    }
    Ok(exit::OK)
}
