//! `wgctl vault put | list`. The secret is read, sent once, and never printed.

use std::io::{IsTerminal, Read};
use std::path::Path;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use wg_domain::api::{VaultEntry, VaultPutRequest};

use super::emit;
use crate::cli::{ListFormat, VaultCmd, VaultPutArgs};
use crate::client::{ApiClient, api_path};
use crate::error::{CliError, exit};
use crate::render;

/// The largest secret accepted.
const MAX_SECRET: u64 = 64 * 1024;

/// `GET /api/v1/vault` answer.
#[derive(Debug, Serialize, Deserialize)]
struct Entries {
    entries: Vec<VaultEntry>,
}

pub(super) async fn run(client: &ApiClient, cmd: VaultCmd) -> Result<u8, CliError> {
    match cmd {
        VaultCmd::Put(args) => put(client, args).await,
        VaultCmd::List(args) => {
            let list: Entries = client.get(&api_path(&["vault"]), &[]).await?;
            emit(&match args.output {
                ListFormat::Table => render::vault_list(&list.entries),
                ListFormat::Json => render::json(&list)?,
            })?;
            Ok(exit::OK)
        }
    }
}

/// Removes one trailing newline (`\n` or `\r\n`), as `echo` or a here-string adds one.
pub(super) fn strip_one_newline(mut s: String) -> String {
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    s
}

fn read_password() -> Result<String, CliError> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        // Reading from the terminal would echo the password: insist on a pipe.
        return Err(CliError::Usage(
            "--password-stdin reads the password from a pipe, e.g. `printf %s \"$PW\" | wgctl vault put PATH --password-stdin`"
                .into(),
        ));
    }
    let mut text = String::new();
    stdin
        .lock()
        .take(MAX_SECRET + 1)
        .read_to_string(&mut text)
        .map_err(|e| CliError::Usage(format!("cannot read the password from stdin: {e}")))?;
    if text.len() as u64 > MAX_SECRET {
        return Err(CliError::Usage(format!(
            "the password is longer than {MAX_SECRET} bytes"
        )));
    }
    let pw = strip_one_newline(text);
    if pw.is_empty() {
        return Err(CliError::Usage("empty password on stdin".into()));
    }
    Ok(pw)
}

fn read_private_key(path: &Path) -> Result<String, CliError> {
    let shown = path.display();
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SECRET + 1).read_to_string(&mut text))
        .map_err(|e| CliError::Usage(format!("cannot read {shown}: {e}")))?;
    if text.len() as u64 > MAX_SECRET {
        return Err(CliError::Usage(format!(
            "{shown} is larger than {MAX_SECRET} bytes: not a private key"
        )));
    }
    let trimmed = text.trim_start();
    if trimmed.starts_with("ssh-") || trimmed.starts_with("ecdsa-") {
        return Err(CliError::Usage(format!(
            "{shown} holds a public key: pass the private key file"
        )));
    }
    if !text.contains("PRIVATE KEY-----") {
        return Err(CliError::Usage(format!(
            "{shown} is not a PEM private key (expected -----BEGIN … PRIVATE KEY-----)"
        )));
    }
    Ok(text)
}

async fn put(client: &ApiClient, args: VaultPutArgs) -> Result<u8, CliError> {
    let body = match (&args.private_key_file, args.password_stdin) {
        (Some(file), false) => VaultPutRequest {
            kind: "private_key".into(),
            secret: read_private_key(file)?,
        },
        (None, true) => VaultPutRequest {
            kind: "password".into(),
            secret: read_password()?,
        },
        _ => {
            return Err(CliError::Usage(
                "give exactly one of --password-stdin and --private-key-file".into(),
            ));
        }
    };
    let segments: Vec<&str> = std::iter::once("vault")
        .chain(args.path.split('/'))
        .collect();
    let entry: VaultEntry = client
        .send(Method::PUT, &api_path(&segments), &body)
        .await?;
    drop(body);
    emit(&render::vault_written(&entry))?;
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_newline_is_stripped() {
        assert_eq!(strip_one_newline("pw\n".into()), "pw");
        assert_eq!(strip_one_newline("pw\r\n".into()), "pw");
        assert_eq!(strip_one_newline("pw\n\n".into()), "pw\n");
        assert_eq!(strip_one_newline("pw".into()), "pw");
    }
}
