//! `wgctl apply | get | delete`.

use std::io::Read;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use wg_domain::api::{ApplyRequest, ApplyResponse};
use wg_domain::resources::{Resource, parse_documents};

use super::emit;
use crate::cli::{ApplyArgs, DeleteArgs, GetArgs, GetFormat};
use crate::client::{ApiClient, api_path};
use crate::error::{CliError, exit};
use crate::render;

/// The largest resource file accepted (a typo such as `-f /dev/zero` must not eat the memory).
const MAX_FILE: u64 = 16 * 1024 * 1024;

/// `GET /api/v1/resources/{kind}` answer.
#[derive(Debug, Serialize, Deserialize)]
struct Items {
    items: Vec<Resource>,
}

/// Reads the resource file (`-` is standard input) and checks it locally, so that a syntax error
/// is reported with its line and column before anything is sent.
fn read_resources(file: &str) -> Result<String, CliError> {
    let mut text = String::new();
    let read = if file == "-" {
        std::io::stdin()
            .lock()
            .take(MAX_FILE + 1)
            .read_to_string(&mut text)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(MAX_FILE + 1).read_to_string(&mut text))
    };
    let name = if file == "-" { "<stdin>" } else { file };
    read.map_err(|e| CliError::Usage(format!("cannot read {name}: {e}")))?;
    if text.len() as u64 > MAX_FILE {
        return Err(CliError::Usage(format!(
            "{name} is larger than {MAX_FILE} bytes"
        )));
    }
    let parsed = parse_documents(&text).map_err(|e| CliError::Usage(format!("{name}: {e}")))?;
    if parsed.is_empty() {
        return Err(CliError::Usage(format!("{name} contains no resources")));
    }
    Ok(text)
}

pub(super) async fn apply(client: &ApiClient, args: ApplyArgs) -> Result<u8, CliError> {
    let yaml = read_resources(&args.file)?;
    let resp: ApplyResponse = client
        .send(Method::POST, &api_path(&["apply"]), &ApplyRequest { yaml })
        .await?;
    emit(&render::apply(&resp))?;
    Ok(exit::OK)
}

pub(super) async fn get(client: &ApiClient, args: GetArgs) -> Result<u8, CliError> {
    let kind = args.kind.as_str();
    let text = match &args.name {
        Some(name) => {
            let r: Resource = client
                .get(&api_path(&["resources", kind, name]), &[])
                .await?;
            match args.output {
                GetFormat::Table => render::resources_table(args.kind, std::slice::from_ref(&r)),
                GetFormat::Json => render::json(&r)?,
                GetFormat::Yaml => render::resources_yaml(std::slice::from_ref(&r))?,
            }
        }
        None => {
            let list: Items = client.get(&api_path(&["resources", kind]), &[]).await?;
            match args.output {
                GetFormat::Table => render::resources_table(args.kind, &list.items),
                GetFormat::Json => render::json(&list)?,
                GetFormat::Yaml => render::resources_yaml(&list.items)?,
            }
        }
    };
    emit(&text)?;
    Ok(exit::OK)
}

pub(super) async fn delete(client: &ApiClient, args: DeleteArgs) -> Result<u8, CliError> {
    let kind = args.kind.as_str();
    client
        .delete(&api_path(&["resources", kind, &args.name]))
        .await?;
    emit(&format!("{kind}/{} deleted\n", render::clean(&args.name)))?;
    Ok(exit::OK)
}
