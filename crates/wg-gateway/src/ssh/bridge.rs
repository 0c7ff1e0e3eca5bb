//! Channel relay: one client session channel bridged to one target session channel.
//!
//! Two tasks per channel pair, one per direction, so that a direction blocked on its peer's window
//! never stops the other from draining (flow control comes from the SSH windows of each leg; no
//! buffer here grows without bound). Channel requests with a reply (pty-req, shell, exec,
//! subsystem) are forwarded with `want_reply` and the target's answer is relayed back in order;
//! env, window-change and signal go without reply, as OpenSSH sends them.
//!
//! Recording tap: every output byte is handed to the recorder *before* it is sent to the client,
//! so the recording holds exactly what the client received up to the moment the relay stops.
//! Subsystem channels (sftp) carry binary file data: they are recorded as markers only.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use russh::server::Handle as ServerHandle;
use russh::{ChannelId, ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio_util::sync::CancellationToken;
use wg_recording::{Frame, Header, Recorder, RecorderConfig};

use crate::runtime::{KillInfo, LiveSession};

/// What both directions of one bridge share.
#[derive(Clone)]
pub(crate) struct BridgeCtx {
    pub(crate) live: Arc<LiveSession>,
    pub(crate) server: ServerHandle,
    pub(crate) stop: CancellationToken,
    pub(crate) recordings: Arc<RecorderConfig>,
    pub(crate) exit_status: Arc<std::sync::Mutex<Option<i32>>>,
}

impl BridgeCtx {
    /// The recorder, started on the first shell/exec/subsystem request with the client's
    /// terminal size (80x24 without a PTY).
    async fn recorder(&self) -> Result<Option<&Recorder>, wg_recording::RecordingError> {
        let live = &self.live;
        let cfg = self.recordings.clone();
        live.recorder(|| async move {
            let (term, cols, rows) = live.pty().unwrap_or_else(|| (String::new(), 80, 24));
            let header = Header {
                width: cols,
                height: rows,
                timestamp: wg_domain::time::now_millis() / 1000,
                term: (!term.is_empty()).then_some(term),
                title: Some(live.id.to_string()),
            };
            Recorder::start(&cfg, &live.id.to_string(), header).await
        })
        .await
    }

    async fn record(&self, frame: Frame) {
        if let Some(rec) = self.live.started_recorder()
            && let Err(e) = rec.record(frame).await
        {
            // Recording is mandatory under `recording: full`: fail closed.
            tracing::error!(session = %self.live.id, error = %e, "recording failed; ending the session");
            self.live.kill(KillInfo {
                reason: wg_domain::lifecycle::EndReason::GatewayError,
                by: None,
                detail: format!("recording failed: {e}"),
            });
        }
    }
}

/// Starts the two relay tasks of a channel pair.
pub(crate) fn spawn(
    ctx: BridgeCtx,
    client: russh::Channel<russh::server::Msg>,
    target: russh::Channel<russh::client::Msg>,
) -> [tokio::task::JoinHandle<()>; 2] {
    let client_id = client.id();
    let (client_rx, client_tx) = client.split();
    let (target_rx, target_tx) = target.split();
    let subsystem = Arc::new(AtomicBool::new(false));
    let up = tokio::spawn(client_to_target(
        ctx.clone(),
        client_id,
        client_rx,
        target_tx,
        subsystem.clone(),
    ));
    let down = tokio::spawn(target_to_client(
        ctx, client_id, target_rx, client_tx, subsystem,
    ));
    [up, down]
}

async fn client_to_target(
    ctx: BridgeCtx,
    client_id: ChannelId,
    mut rx: ChannelReadHalf,
    tx: ChannelWriteHalf<russh::client::Msg>,
    subsystem: Arc<AtomicBool>,
) {
    loop {
        let msg = tokio::select! {
            biased;
            _ = ctx.stop.cancelled() => break,
            m = rx.wait() => m,
        };
        let Some(msg) = msg else {
            let _ = tx.close().await;
            break;
        };
        let sent = match msg {
            ChannelMsg::Data { data } => {
                ctx.live.touch_input();
                if !subsystem.load(Ordering::Relaxed) {
                    ctx.record(Frame::Input(data.to_vec())).await;
                }
                tx.data_bytes(data).await
            }
            ChannelMsg::ExtendedData { data, ext } => {
                ctx.live.touch_input();
                tx.extended_data_bytes(ext, data).await
            }
            ChannelMsg::Eof => tx.eof().await,
            ChannelMsg::Close => {
                let _ = tx.close().await;
                break;
            }
            ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                pix_width,
                pix_height,
                terminal_modes,
                ..
            } => {
                ctx.live.set_pty(&term, col_width, row_height);
                tx.request_pty(
                    true,
                    &term,
                    col_width,
                    row_height,
                    pix_width,
                    pix_height,
                    &terminal_modes,
                )
                .await
            }
            ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            } => tx.set_env(false, variable_name, variable_value).await,
            ChannelMsg::RequestShell { .. } => {
                if !start_recording(&ctx, client_id).await {
                    break;
                }
                tx.request_shell(true).await
            }
            ChannelMsg::Exec { command, .. } => {
                if !start_recording(&ctx, client_id).await {
                    break;
                }
                ctx.record(Frame::Marker(format!(
                    "exec: {}",
                    String::from_utf8_lossy(&command)
                )))
                .await;
                tx.exec(true, command).await
            }
            ChannelMsg::RequestSubsystem { name, .. } => {
                if !start_recording(&ctx, client_id).await {
                    break;
                }
                subsystem.store(true, Ordering::Relaxed);
                ctx.record(Frame::Marker(format!("subsystem: {name}")))
                    .await;
                tx.request_subsystem(true, name).await
            }
            ChannelMsg::WindowChange {
                col_width,
                row_height,
                pix_width,
                pix_height,
            } => {
                ctx.live.resize(col_width, row_height);
                ctx.record(Frame::Resize {
                    cols: col_width,
                    rows: row_height,
                })
                .await;
                tx.window_change(col_width, row_height, pix_width, pix_height)
                    .await
            }
            ChannelMsg::Signal { signal } => tx.signal(signal).await,
            _ => Ok(()),
        };
        if sent.is_err() {
            break;
        }
    }
}

/// Starts the recorder if policy demands one; on failure answers the client's request with a
/// failure, ends the session and returns `false`.
async fn start_recording(ctx: &BridgeCtx, client_id: ChannelId) -> bool {
    match ctx.recorder().await {
        Ok(_) => true,
        Err(e) => {
            tracing::error!(session = %ctx.live.id, error = %e, "cannot start the mandatory recording");
            let _ = ctx.server.channel_failure(client_id).await;
            ctx.live.kill(KillInfo {
                reason: wg_domain::lifecycle::EndReason::GatewayError,
                by: None,
                detail: format!("the mandatory recording cannot be written: {e}"),
            });
            false
        }
    }
}

async fn target_to_client(
    ctx: BridgeCtx,
    client_id: ChannelId,
    mut rx: ChannelReadHalf,
    tx: ChannelWriteHalf<russh::server::Msg>,
    subsystem: Arc<AtomicBool>,
) {
    loop {
        let msg = tokio::select! {
            biased;
            _ = ctx.stop.cancelled() => break,
            m = rx.wait() => m,
        };
        let Some(msg) = msg else {
            let _ = tx.close().await;
            break;
        };
        let sent = match msg {
            ChannelMsg::Data { data } => {
                if !subsystem.load(Ordering::Relaxed) {
                    ctx.record(Frame::Output(data.to_vec())).await;
                }
                tx.data_bytes(data).await
            }
            ChannelMsg::ExtendedData { data, ext } => {
                if !subsystem.load(Ordering::Relaxed) {
                    ctx.record(Frame::Output(data.to_vec())).await;
                }
                tx.extended_data_bytes(ext, data).await
            }
            ChannelMsg::Eof => tx.eof().await,
            ChannelMsg::Close => {
                let _ = tx.close().await;
                break;
            }
            ChannelMsg::ExitStatus { exit_status } => {
                if let Ok(mut e) = ctx.exit_status.lock() {
                    e.get_or_insert(i32::try_from(exit_status).unwrap_or(i32::MAX));
                }
                ctx.server
                    .exit_status_request(client_id, exit_status)
                    .await
                    .map_err(|_| russh::Error::SendError)
            }
            ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                error_message,
                lang_tag,
            } => {
                ctx.record(Frame::Marker(format!("exit-signal: {signal_name:?}")))
                    .await;
                ctx.server
                    .exit_signal_request(
                        client_id,
                        signal_name,
                        core_dumped,
                        error_message,
                        lang_tag,
                    )
                    .await
                    .map_err(|_| russh::Error::SendError)
            }
            ChannelMsg::Success => ctx
                .server
                .channel_success(client_id)
                .await
                .map_err(|_| russh::Error::SendError),
            ChannelMsg::Failure => ctx
                .server
                .channel_failure(client_id)
                .await
                .map_err(|_| russh::Error::SendError),
            _ => Ok(()),
        };
        if sent.is_err() {
            break;
        }
    }
}
