//! `wgctl recording verify | play`.

use tokio::io::AsyncWriteExt;
use wg_domain::api::RecordingVerify;

use super::emit;
use crate::cli::{RecordingCmd, RecordingPlayArgs, ShowFormat};
use crate::client::{ApiClient, api_path};
use crate::error::{CliError, exit};
use crate::render;

pub(super) async fn run(client: &ApiClient, cmd: RecordingCmd) -> Result<u8, CliError> {
    match cmd {
        RecordingCmd::Verify(args) => {
            let v: RecordingVerify = client
                .get(&api_path(&["recordings", &args.id, "verify"]), &[])
                .await?;
            emit(&match args.output {
                ShowFormat::Text => render::recording_verify(&v),
                ShowFormat::Json => render::json(&v)?,
            })?;
            Ok(if v.ok { exit::OK } else { exit::FAILURE })
        }
        RecordingCmd::Play(args) => play(client, args).await,
    }
}

async fn play(client: &ApiClient, args: RecordingPlayArgs) -> Result<u8, CliError> {
    let stream = client
        .get_bytes(&api_path(&["recordings", &args.id, "stream"]))
        .await?;
    let (_header, events) = wg_recording::parse_stream(&stream)
        .map_err(|e| CliError::Failed(format!("recording {}: {e}", render::clean(&args.id))))?;
    let mut out = tokio::io::stdout();
    let played = match wg_recording::play(&events, args.speed, args.max_idle, &mut out).await {
        Ok(()) => out.flush().await,
        Err(e) => Err(e),
    };
    match played {
        Ok(()) => Ok(exit::OK),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(exit::OK),
        Err(e) => Err(CliError::Failed(format!("playback: {e}"))),
    }
}
