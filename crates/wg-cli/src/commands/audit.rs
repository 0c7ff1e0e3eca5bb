//! `wgctl audit list | verify`.

use wg_domain::api::{AuditList, AuditVerify};

use super::emit;
use crate::cli::{AuditCmd, ListFormat, ShowFormat};
use crate::client::{ApiClient, api_path};
use crate::error::{CliError, exit};
use crate::render;

pub(super) async fn run(client: &ApiClient, cmd: AuditCmd) -> Result<u8, CliError> {
    match cmd {
        AuditCmd::List(args) => {
            let query = [("session", args.session), ("kind", args.kind)];
            let list: AuditList = client.get(&api_path(&["audit"]), &query).await?;
            emit(&match args.output {
                ListFormat::Table => render::audit_list(&list.events),
                ListFormat::Json => render::json(&list)?,
            })?;
            Ok(exit::OK)
        }
        AuditCmd::Verify(args) => {
            let v: AuditVerify = client.get(&api_path(&["audit", "verify"]), &[]).await?;
            emit(&match args.output {
                ShowFormat::Text => render::audit_verify(&v),
                ShowFormat::Json => render::json(&v)?,
            })?;
            Ok(if v.ok { exit::OK } else { exit::FAILURE })
        }
    }
}
