//! `wgctl session list | show | terminate | handoff | accept | attach`.

use reqwest::Method;
use wg_domain::api::{
    HandoffRequest, HandoffView, SessionList, SessionView, TerminateRequest, TerminateResponse,
    WhoAmI,
};

use super::emit;
use crate::cli::{
    AttachArgs, HandoffArgs, ListFormat, SessionCmd, SessionListArgs, ShowFormat, SshAddr,
    TerminateArgs,
};
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
        SessionCmd::Handoff(args) => handoff(client, args).await,
        SessionCmd::Accept(args) => {
            // Resolved before the accept: a bad WGCTL_SSH_ADDR must not leave it half done.
            let addr = crate::cli::ssh_addr(args.ssh_addr.as_ref())?;
            let view: HandoffView = client
                .send(
                    Method::POST,
                    &api_path(&["sessions", &args.id, "accept"]),
                    &serde_json::json!({}),
                )
                .await?;
            emit(&render::handoff_accepted(&view, &addr))?;
            Ok(exit::OK)
        }
        SessionCmd::Attach(args) => attach(client, args).await,
    }
}

async fn handoff(client: &ApiClient, args: HandoffArgs) -> Result<u8, CliError> {
    let body = HandoffRequest {
        to: args.to,
        reason: args.reason,
        ttl_seconds: args.ttl.map(|d| d.as_secs()),
    };
    let view: HandoffView = client
        .send(
            Method::POST,
            &api_path(&["sessions", &args.id, "handoff"]),
            &body,
        )
        .await?;
    emit(&render::handoff_requested(&view))?;
    Ok(exit::OK)
}

/// The ssh command line that attaches `principal` to session `id` through the gateway at
/// `addr`: `ssh -t -p PORT [EXTRA…] PRINCIPAL:ID@HOST`.
pub(super) fn attach_argv(
    principal: &str,
    id: &str,
    addr: &SshAddr,
    extra: &[String],
) -> Vec<String> {
    let mut argv = vec![
        "ssh".to_owned(),
        "-t".to_owned(),
        "-p".to_owned(),
        addr.port.to_string(),
    ];
    argv.extend(extra.iter().cloned());
    argv.push(format!("{principal}:{id}@{}", addr.host));
    argv
}

async fn attach(client: &ApiClient, args: AttachArgs) -> Result<u8, CliError> {
    let addr = crate::cli::ssh_addr(args.ssh_addr.as_ref())?;
    let me: WhoAmI = client.get(&api_path(&["whoami"]), &[]).await?;
    let argv = attach_argv(&me.principal, &args.id, &addr, &args.ssh_args);
    run_ssh(&argv)
}

/// Replaces this process with ssh (its exit status becomes ours).
#[cfg(unix)]
fn run_ssh(argv: &[String]) -> Result<u8, CliError> {
    use std::os::unix::process::CommandExt;
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| CliError::Failed("empty ssh command".into()))?;
    let err = std::process::Command::new(program).args(args).exec();
    Err(CliError::Failed(format!("cannot run {program}: {err}")))
}

/// Runs ssh and passes its exit status on.
#[cfg(not(unix))]
fn run_ssh(argv: &[String]) -> Result<u8, CliError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| CliError::Failed("empty ssh command".into()))?;
    let status = std::process::Command::new(program)
        .args(args)
        .status()
        .map_err(|e| CliError::Failed(format!("cannot run {program}: {e}")))?;
    Ok(status
        .code()
        .and_then(|c| u8::try_from(c).ok())
        .unwrap_or(exit::FAILURE))
}

/// Lists every matching session, following the API's pages (1,000 sessions each) to the end,
/// so that a large cluster's list is never cut short.
async fn list(client: &ApiClient, args: SessionListArgs) -> Result<u8, CliError> {
    let filters = [
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
    let mut all = SessionList::default();
    let mut cursor = None;
    loop {
        let mut query = filters.to_vec();
        query.push(("cursor", cursor.take()));
        let page: SessionList = client.get(&api_path(&["sessions"]), &query).await?;
        all.sessions.extend(page.sessions);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    emit(&match args.output {
        ListFormat::Table => render::session_list(&all.sessions),
        ListFormat::Json => render::json(&all)?,
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
    fn attach_runs_ssh_with_the_owner_and_session_in_the_login_name() {
        let cli = Cli::try_parse_from([
            "wgctl",
            "session",
            "attach",
            "sess_a91c7f20bb48",
            "--ssh-addr",
            "gw.example:2222",
            "--",
            "-i",
            "key",
        ])
        .unwrap();
        let Command::Session(SessionCmd::Attach(args)) = cli.command else {
            panic!("expected attach");
        };
        assert_eq!(
            attach_argv(
                "dan@corp",
                &args.id,
                &crate::cli::ssh_addr(args.ssh_addr.as_ref()).unwrap(),
                &args.ssh_args
            ),
            [
                "ssh",
                "-t",
                "-p",
                "2222",
                "-i",
                "key",
                "dan@corp:sess_a91c7f20bb48@gw.example"
            ]
        );
    }

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
