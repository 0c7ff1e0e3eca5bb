//! `wgctl session list | show | terminate`.

use reqwest::Method;
use wg_domain::api::{SessionList, SessionView, TerminateRequest, TerminateResponse};

use super::emit;
use crate::cli::{ListFormat, SessionCmd, SessionListArgs, ShowFormat, TerminateArgs};
use crate::client::{ApiClient, api_path};
use crate::error::{CliError, exit};
use crate::render;

pub(super) async fn run(client: &ApiClient, cmd: SessionCmd) -> Result<u8, CliError> {
    match cmd {
        SessionCmd::List(args) => list(client, args).await,
        SessionCmd::Show(args) => {
            let view: SessionView = client.get(&api_path(&["sessions", &args.id]), &[]).await?;
            emit(&match args.output {
                ShowFormat::Text => render::session_show(&view),
                ShowFormat::Json => render::json(&view)?,
            })?;
            Ok(exit::OK)
        }
        SessionCmd::Terminate(args) => terminate(client, args).await,
    }
}

async fn list(client: &ApiClient, args: SessionListArgs) -> Result<u8, CliError> {
    let query = [
        ("state", args.state.map(|s| s.as_str().to_owned())),
        ("actor", args.actor),
        ("target", args.target),
        ("protocol", args.protocol.map(|p| p.as_str().to_owned())),
        ("gateway", args.gateway),
        (
            "idle_gt",
            args.idle_gt.map(wg_domain::time::format_duration),
        ),
    ];
    let list: SessionList = client.get(&api_path(&["sessions"]), &query).await?;
    emit(&match args.output {
        ListFormat::Table => render::session_list(&list.sessions),
        ListFormat::Json => render::json(&list)?,
    })?;
    Ok(exit::OK)
}

/// What to terminate: one session, or every session matching selectors.
#[derive(Debug)]
pub(super) enum TerminateTarget<'a> {
    One(&'a str),
    Matching,
}

/// The session to terminate, the selectors, or a usage error when neither is given.
pub(super) fn terminate_target(args: &TerminateArgs) -> Result<TerminateTarget<'_>, CliError> {
    if let Some(id) = args.id.as_deref() {
        return Ok(TerminateTarget::One(id));
    }
    if args.actor.is_some()
        || args.target.is_some()
        || args.target_tag.is_some()
        || args.protocol.is_some()
    {
        return Ok(TerminateTarget::Matching);
    }
    Err(CliError::Usage(
        "session terminate needs a session ID or a selector, e.g. `wgctl session terminate sess_a91c7f20bb48 --reason \"...\"` \
         or `wgctl session terminate --actor mallory@corp --reason \"credential revoked\"`"
            .into(),
    ))
}

async fn terminate(client: &ApiClient, args: TerminateArgs) -> Result<u8, CliError> {
    let id = match terminate_target(&args)? {
        TerminateTarget::One(id) => id,
        TerminateTarget::Matching => return terminate_matching(client, args).await,
    };
    let body = TerminateRequest {
        reason: args.reason.clone(),
    };
    let resp: TerminateResponse = client
        .send(
            Method::POST,
            &api_path(&["sessions", id, "terminate"]),
            &body,
        )
        .await?;
    emit(&render::terminate(&resp))?;
    Ok(exit::OK)
}

async fn terminate_matching(client: &ApiClient, args: TerminateArgs) -> Result<u8, CliError> {
    let body = wg_domain::api::BulkTerminateRequest {
        reason: args.reason,
        actor: args.actor,
        target: args.target,
        target_tag: args.target_tag,
        protocol: args.protocol,
    };
    let resp: wg_domain::api::BulkTerminateResponse = client
        .send(Method::POST, &api_path(&["sessions", "terminate"]), &body)
        .await?;
    emit(&render::terminate_matching(&resp))?;
    for f in &resp.failed {
        eprintln!("wgctl: could not terminate {}: {}", f.session, f.error);
    }
    Ok(if resp.failed.is_empty() {
        exit::OK
    } else {
        exit::FAILURE
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    #[test]
    fn terminate_without_id_is_a_clear_usage_error() {
        let cli = Cli::try_parse_from(["wgctl", "session", "terminate", "--reason", "r"]).unwrap();
        let Command::Session(SessionCmd::Terminate(args)) = cli.command else {
            panic!("expected terminate");
        };
        let e = terminate_target(&args).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string().contains("needs a session ID or a selector"),
            "{e}"
        );
    }
}
