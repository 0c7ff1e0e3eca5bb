//! Channel relay: one client session channel bridged to one target session channel.
//!
//! Two tasks per channel pair, one per direction, so that a direction blocked on its peer's window
//! never stops the other from draining (flow control comes from the SSH windows of each leg; no
//! buffer here grows without bound). The tasks carry data, EOF and close.
//!
//! Channel requests are forwarded by the connection's handler through [`ChannelPair`], inside the
//! russh callback, in arrival order: russh keeps one "wants reply" flag per channel that the next
//! request overwrites, so a request that needs an answer (pty-req, shell, exec, subsystem) is
//! forwarded with `want_reply`, the target's answer is awaited, and the client is answered before
//! the next request is read. env, window-change and signal go without reply, as OpenSSH sends
//! them.
//!
//! Recording tap: output is recorded as the client's channel takes it, piece by piece as its
//! window allows (see [`deliver`]), so the recording holds exactly what the client received up
//! to the moment the relay stops; output produced while no client is attached to a console is
//! recorded as it comes.
//! Subsystem channels (sftp) carry binary file data: they are recorded as markers only.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use russh::server::Handle as ServerHandle;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wg_recording::{Frame, Header, Recorder, RecorderConfig};

use super::console::{ClientSide, Leg};
use super::tap::{Direction, Tap, Tapped};
use crate::runtime::{KillInfo, LiveSession};

/// What both directions of one bridge share.
#[derive(Clone)]
pub(crate) struct BridgeCtx {
    pub(crate) live: Arc<LiveSession>,
    pub(crate) server: ServerHandle,
    pub(crate) stop: CancellationToken,
    pub(crate) recordings: Arc<RecorderConfig>,
    pub(crate) exit_status: Arc<std::sync::Mutex<Option<i32>>>,
    /// The signal that killed the remote command, if one did (e.g. `TERM`).
    pub(crate) exit_signal: Arc<std::sync::Mutex<Option<String>>>,
    /// The session's console (its PTY shell channel), once one is running.
    pub(crate) console: Arc<std::sync::OnceLock<Arc<ClientSide>>>,
}

impl BridgeCtx {
    /// The recorder, started on the first shell/exec/subsystem request with the client's
    /// terminal size (80x24 without a PTY).
    async fn recorder(&self) -> Result<Option<&Recorder>, wg_recording::RecordingError> {
        let live = &self.live;
        let cfg = self.recordings.clone();
        live.recorder(|| async move {
            // Without a PTY, or with a 0x0 one (`ssh -tt` from a client without a terminal of its
            // own), players get the conventional 80x24.
            let (term, cols, rows) = live
                .pty()
                .filter(|(_, c, r)| *c > 0 && *r > 0)
                .unwrap_or_else(|| (String::new(), 80, 24));
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

    /// Passes relayed bytes through a tap and records what it keeps.
    async fn tap(&self, tap: &mut Tap, flags: &Flags, data: &[u8], event: fn(Vec<u8>) -> Frame) {
        if flags.subsystem.load(Ordering::Relaxed) || self.live.started_recorder().is_none() {
            return;
        }
        match tap.frame(data, flags.pty.load(Ordering::Relaxed)) {
            Tapped::Full => self.record(event(data.to_vec())).await,
            Tapped::SwitchToDigest(marker) => self.record(Frame::Marker(marker)).await,
            Tapped::Digested => {}
        }
    }

    /// Records the closing digest of a tap, if it switched to digest mode.
    async fn finish_tap(&self, tap: &mut Tap) {
        if let Some(marker) = tap.finish() {
            self.record(Frame::Marker(marker)).await;
        }
    }

    /// Records a marker, starting the recording first if policy demands one (so that a
    /// session carrying only port forwards still has a recording naming them).
    pub(crate) async fn marker(&self, text: String) {
        if start_recording(self).await {
            self.record(Frame::Marker(text)).await;
        }
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

/// The handler's side of a bridged channel: forwards channel requests to the target and waits
/// for the target's answers.
pub(crate) struct ChannelPair {
    ctx: BridgeCtx,
    target: Arc<ChannelWriteHalf<russh::client::Msg>>,
    replies: mpsc::Receiver<bool>,
    subsystem: Arc<AtomicBool>,
    pty: Arc<AtomicBool>,
    /// The channel's client side (its screen model follows the PTY size).
    side: Arc<ClientSide>,
    /// The client channel took over the session's running console: its shell is already
    /// running, so pty-req becomes a window change and shell is answered here.
    attached: bool,
}

/// What the relay tasks of one channel share with its [`ChannelPair`].
#[derive(Clone, Default)]
struct Flags {
    /// The channel runs a subsystem (sftp) or is a port forward: markers only.
    subsystem: Arc<AtomicBool>,
    /// The channel has a terminal: always recorded in full.
    pty: Arc<AtomicBool>,
}

/// Writes up to this size (keystrokes, echoes, prompts) get the latency-first ordering of
/// forwarding before recording; see [`deliver`].
const INTERACTIVE_BYTES: usize = 1024;

/// How long a channel request waits for the target's answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(15);

/// A channel request from the client.
pub(crate) enum Request {
    Pty {
        term: String,
        cols: u32,
        rows: u32,
        pix_width: u32,
        pix_height: u32,
        modes: Vec<(russh::Pty, u32)>,
    },
    Shell,
    Exec(Vec<u8>),
    Subsystem(String),
}

impl ChannelPair {
    /// Forwards a request that expects an answer and returns the target's answer (`false` on
    /// failure, timeout, or when the session's mandatory recording cannot start).
    pub(crate) async fn request(&mut self, req: Request) -> bool {
        if self.attached {
            return self.request_attached(req).await;
        }
        let ctx = &self.ctx;
        let sent = match req {
            Request::Pty {
                term,
                cols,
                rows,
                pix_width,
                pix_height,
                modes,
            } => {
                ctx.live.set_pty(&term, cols, rows);
                self.side.start_screen(cols, rows);
                let sent = self
                    .target
                    .request_pty(true, &term, cols, rows, pix_width, pix_height, &modes)
                    .await;
                if sent.is_err() {
                    return false;
                }
                let granted = self.reply().await;
                self.pty.store(granted, Ordering::Relaxed);
                return granted;
            }
            Request::Shell => {
                if !start_recording(ctx).await {
                    return false;
                }
                if self.target.request_shell(true).await.is_err() {
                    return false;
                }
                let granted = self.reply().await;
                // The first interactive shell on a terminal is the session's console: the one
                // that a resume or a handoff re-attaches.
                if granted && self.pty.load(Ordering::Relaxed) {
                    let _ = self.ctx.console.set(self.side.clone());
                }
                return granted;
            }
            Request::Exec(command) => {
                if !start_recording(ctx).await {
                    return false;
                }
                ctx.record(Frame::Marker(format!(
                    "exec: {}",
                    String::from_utf8_lossy(&command)
                )))
                .await;
                self.target.exec(true, command).await
            }
            Request::Subsystem(name) => {
                if !start_recording(ctx).await {
                    return false;
                }
                self.subsystem.store(true, Ordering::Relaxed);
                ctx.record(Frame::Marker(format!("subsystem: {name}")))
                    .await;
                self.target.request_subsystem(true, name).await
            }
        };
        if sent.is_err() {
            return false;
        }
        self.reply().await
    }

    /// Answers a request on a channel attached to the running console: the terminal is
    /// resized to the new client's, the shell is already there, and nothing else can run on it.
    async fn request_attached(&mut self, req: Request) -> bool {
        match req {
            Request::Pty { cols, rows, .. } => {
                self.window_change(cols, rows, 0, 0).await;
                true
            }
            Request::Shell => true,
            Request::Exec(_) | Request::Subsystem(_) => false,
        }
    }

    /// The target's answer to the last forwarded request (`false` on timeout).
    async fn reply(&mut self) -> bool {
        matches!(
            tokio::time::timeout(REPLY_TIMEOUT, self.replies.recv()).await,
            Ok(Some(true))
        )
    }

    /// Forwards an environment variable (no reply, as OpenSSH sends it); not to a running
    /// console, whose environment is the shell's.
    pub(crate) async fn env(&self, name: &str, value: &str) {
        if self.attached {
            return;
        }
        let _ = self.target.set_env(false, name, value).await;
    }

    /// Forwards a window change and records it.
    pub(crate) async fn window_change(
        &self,
        cols: u32,
        rows: u32,
        pix_width: u32,
        pix_height: u32,
    ) {
        self.ctx.live.resize(cols, rows);
        self.side.resize(cols, rows);
        self.ctx.record(Frame::Resize { cols, rows }).await;
        let _ = self
            .target
            .window_change(cols, rows, pix_width, pix_height)
            .await;
    }

    /// Forwards a signal.
    pub(crate) async fn signal(&self, signal: russh::Sig) {
        let _ = self.target.signal(signal).await;
    }

    /// The target channel's write half.
    pub(crate) fn target(&self) -> Arc<ChannelWriteHalf<russh::client::Msg>> {
        self.target.clone()
    }
}

/// Starts the two relay tasks of a channel pair; returns the handler's side and the tasks.
/// An `opaque` channel (a port forward) is relayed but its bytes are not recorded. `leg` is the
/// client end: its connection's release token and number.
pub(crate) fn spawn(
    ctx: BridgeCtx,
    client: russh::Channel<russh::server::Msg>,
    target: russh::Channel<russh::client::Msg>,
    opaque: bool,
    leg: (CancellationToken, u64),
) -> (ChannelPair, [tokio::task::JoinHandle<()>; 2]) {
    let (client_rx, client_tx) = client.split();
    let (target_rx, target_tx) = target.split();
    let target_tx = Arc::new(target_tx);
    let flags = Flags::default();
    flags.subsystem.store(opaque, Ordering::Relaxed);
    let conn = leg.1;
    let side = ClientSide::new(
        Leg::new(client_tx, ctx.server.clone(), leg.0, leg.1),
        target_tx.clone(),
    );
    // One answer per forwarded request; the handler waits for each before reading the next.
    let (replies_tx, replies) = mpsc::channel(4);
    let up = tokio::spawn(client_to_target(
        ctx.clone(),
        client_rx,
        side.clone(),
        flags.clone(),
        conn,
    ));
    let down = tokio::spawn(target_to_client(
        ctx.clone(),
        target_rx,
        side.clone(),
        flags.clone(),
        replies_tx,
    ));
    let pair = ChannelPair {
        ctx,
        target: target_tx,
        replies,
        subsystem: flags.subsystem,
        pty: flags.pty,
        side,
        attached: false,
    };
    (pair, [up, down])
}

/// Attaches a new client channel to the session's running console: the previous client (if
/// any) is told `notice` and released, the new one gets the screen redrawn, and its input goes
/// to the same shell. Returns the handler's side and the input task.
pub(crate) async fn attach_console(
    ctx: BridgeCtx,
    console: &Arc<ClientSide>,
    client: russh::Channel<russh::server::Msg>,
    leg: (CancellationToken, u64),
    notice: &str,
) -> (ChannelPair, tokio::task::JoinHandle<()>) {
    let (client_rx, client_tx) = client.split();
    let conn = leg.1;
    console
        .take_over(
            Leg::new(client_tx, ctx.server.clone(), leg.0, leg.1),
            notice,
        )
        .await;
    let target = console.target.clone();
    let flags = Flags::default();
    flags.pty.store(true, Ordering::Relaxed);
    let up = tokio::spawn(client_to_target(
        ctx.clone(),
        client_rx,
        console.clone(),
        flags.clone(),
        conn,
    ));
    let (_, replies) = mpsc::channel(1);
    let pair = ChannelPair {
        ctx,
        target,
        replies,
        subsystem: flags.subsystem,
        pty: flags.pty,
        side: console.clone(),
        attached: true,
    };
    (pair, up)
}

/// Relays client input (of the leg of connection `conn`) to the target. On the session's
/// console, only the attached leg is relayed: a leg that was taken over stops at once, and when
/// the client's connection drops (no CLOSE) the target channel is left open — the connection
/// task decides whether the session is detached (resume, reauth) or closed (strict).
async fn client_to_target(
    ctx: BridgeCtx,
    mut rx: ChannelReadHalf,
    side: Arc<ClientSide>,
    flags: Flags,
    conn: u64,
) {
    let tx = side.target.clone();
    let mut input = Tap::new(Direction::Input);
    loop {
        let msg = tokio::select! {
            biased;
            _ = ctx.stop.cancelled() => break,
            m = rx.wait() => m,
        };
        let console = ctx.console.get().is_some_and(|c| Arc::ptr_eq(c, &side));
        if console && !side.is_attached(conn) {
            break;
        }
        let Some(msg) = msg else {
            if !console {
                let _ = tx.close().await;
            }
            break;
        };
        // Channel requests arrive here too (russh copies them); the handler forwards those.
        let sent = match msg {
            ChannelMsg::Data { data } => {
                ctx.live.touch_input();
                // Forward first, then record: the keystroke is on its way before the recorder's
                // writer is woken (see `deliver`).
                let sent = tx.data_bytes(data.clone()).await;
                if data.len() <= INTERACTIVE_BYTES && ctx.live.started_recorder().is_some() {
                    tokio::task::yield_now().await;
                }
                ctx.tap(&mut input, &flags, &data, Frame::Input).await;
                sent
            }
            ChannelMsg::ExtendedData { data, ext } => {
                ctx.live.touch_input();
                tx.extended_data_bytes(ext, data).await
            }
            // On the console, a client's EOF (sent as its terminal closes) would end the shell's
            // input for good, also for the client that resumes or takes over: a terminal
            // cannot be half-closed, so sshd drops everything after it. Not relayed there.
            ChannelMsg::Eof if console => Ok(()),
            ChannelMsg::Eof => tx.eof().await,
            ChannelMsg::Close => {
                let _ = tx.close().await;
                break;
            }
            _ => Ok(()),
        };
        if sent.is_err() {
            break;
        }
    }
    ctx.finish_tap(&mut input).await;
}

/// Output of a channel without a terminal (exec, sftp, a port forward) is a transfer or a job
/// in flight, which idle disconnect must not cut (the seed: "large rsync, slow query"); output
/// on a terminal is not activity (S1: a program printing every second is still idle).
fn machine_activity(ctx: &BridgeCtx, flags: &Flags) {
    if !flags.pty.load(Ordering::Relaxed) {
        ctx.live.touch_input();
    }
}

/// Sends output to the client and records exactly what was handed over: each write takes as
/// much as the client's window allows, and only those bytes are recorded, after the write. A
/// relay stopped while the client is not reading (window closed) therefore records nothing the
/// client did not get.
///
/// A write waiting for window gives up when `released` is cancelled: the client's connection
/// ended or let this leg go (russh's writer waits for window even on a dead connection, and the
/// output task holds the leg lock meanwhile, which detach and takeover need).
///
/// # Errors
/// The offset in `data` of the first byte the client did not get.
async fn deliver<W: tokio::io::AsyncWrite + Unpin>(
    ctx: &BridgeCtx,
    tap: &mut Tap,
    flags: &Flags,
    writer: &mut W,
    data: &[u8],
    released: &CancellationToken,
) -> Result<(), usize> {
    use tokio::io::AsyncWriteExt;
    let mut off = 0;
    while off < data.len() {
        let n = tokio::select! {
            biased;
            w = writer.write(&data[off..]) => w.map_err(|_| off)?,
            _ = released.cancelled() => return Err(off),
        };
        if n == 0 {
            return Err(off);
        }
        // For interactive-sized writes, let the session task that puts these bytes on the wire
        // run before the recorder's writer is woken (tokio runs the last-woken task next):
        // recording stays off the echo path. Bulk writes skip the extra scheduling.
        if n <= INTERACTIVE_BYTES && ctx.live.started_recorder().is_some() {
            tokio::task::yield_now().await;
        }
        ctx.tap(tap, flags, &data[off..off + n], Frame::Output)
            .await;
        off += n;
    }
    Ok(())
}

/// The outcome of a [`deliver`] as a relay result. On the console, output its client did not
/// get (the connection ended or let go mid-write) is recorded as output produced while no
/// client was attached, which it then is; other channels stop with their client.
async fn undelivered(
    ctx: &BridgeCtx,
    tap: &mut Tap,
    flags: &Flags,
    console: bool,
    data: &[u8],
    sent: Result<(), usize>,
) -> Result<(), russh::Error> {
    let Err(off) = sent else {
        return Ok(());
    };
    if console {
        ctx.tap(tap, flags, &data[off..], Frame::Output).await;
    }
    Err(russh::Error::SendError)
}

/// Starts the recorder if policy demands one; on failure ends the session and returns `false`
/// (the caller answers the client's request with a failure).
async fn start_recording(ctx: &BridgeCtx) -> bool {
    match ctx.recorder().await {
        Ok(_) => true,
        Err(e) => {
            tracing::error!(session = %ctx.live.id, error = %e, "cannot start the mandatory recording");
            ctx.live.kill(KillInfo {
                reason: wg_domain::lifecycle::EndReason::GatewayError,
                by: None,
                detail: format!("the mandatory recording cannot be written: {e}"),
            });
            false
        }
    }
}

/// Relays target output to whichever client leg is attached (none while detached: the output is
/// then recorded and drawn on the screen model only).
async fn target_to_client(
    ctx: BridgeCtx,
    mut rx: ChannelReadHalf,
    side: Arc<ClientSide>,
    flags: Flags,
    replies: mpsc::Sender<bool>,
) {
    let mut stdout = Tap::new(Direction::Output);
    let mut stderr = Tap::new(Direction::ErrorOutput);
    loop {
        let msg = tokio::select! {
            biased;
            _ = ctx.stop.cancelled() => break,
            m = rx.wait() => m,
        };
        let Some(msg) = msg else {
            side.ended.cancel();
            if let Some(leg) = side.leg.lock().await.as_ref() {
                let _ = leg.tx.close().await;
            }
            break;
        };
        let mut guard = side.leg.lock().await;
        let console = ctx.console.get().is_some_and(|c| Arc::ptr_eq(c, &side));
        let sent = match msg {
            // The screen model is fed after the client has the bytes (off the echo path), still
            // under the leg lock, so a takeover that redraws from it sees them.
            ChannelMsg::Data { data } => {
                machine_activity(&ctx, &flags);
                let sent = match guard.as_mut() {
                    Some(leg) => {
                        let Leg { out, released, .. } = leg;
                        let sent = deliver(&ctx, &mut stdout, &flags, out, &data, released).await;
                        undelivered(&ctx, &mut stdout, &flags, console, &data, sent).await
                    }
                    None => {
                        ctx.tap(&mut stdout, &flags, &data, Frame::Output).await;
                        Ok(())
                    }
                };
                side.draw(&data);
                sent
            }
            ChannelMsg::ExtendedData { data, ext } => {
                machine_activity(&ctx, &flags);
                let sent = match guard.as_mut() {
                    Some(leg) => {
                        let mut w = leg.tx.make_writer_ext(Some(ext));
                        let sent =
                            deliver(&ctx, &mut stderr, &flags, &mut w, &data, &leg.released).await;
                        undelivered(&ctx, &mut stderr, &flags, console, &data, sent).await
                    }
                    None => {
                        ctx.tap(&mut stderr, &flags, &data, Frame::Output).await;
                        Ok(())
                    }
                };
                side.draw(&data);
                sent
            }
            ChannelMsg::Eof => match guard.as_ref() {
                Some(leg) => leg.tx.eof().await,
                None => Ok(()),
            },
            ChannelMsg::Close => {
                side.ended.cancel();
                if let Some(leg) = guard.as_ref() {
                    let _ = leg.tx.close().await;
                }
                break;
            }
            ChannelMsg::ExitStatus { exit_status } => {
                if let Ok(mut e) = ctx.exit_status.lock() {
                    e.get_or_insert(i32::try_from(exit_status).unwrap_or(i32::MAX));
                }
                match guard.as_ref() {
                    Some(leg) => leg
                        .server
                        .exit_status_request(leg.channel, exit_status)
                        .await
                        .map_err(|_| russh::Error::SendError),
                    None => Ok(()),
                }
            }
            ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                error_message,
                lang_tag,
            } => {
                let name = match &signal_name {
                    russh::Sig::Custom(s) => s.clone(),
                    other => format!("{other:?}"),
                };
                if let Ok(mut e) = ctx.exit_signal.lock() {
                    e.get_or_insert(name.clone());
                }
                ctx.record(Frame::Marker(format!("exit-signal: {name}")))
                    .await;
                match guard.as_ref() {
                    Some(leg) => leg
                        .server
                        .exit_signal_request(
                            leg.channel,
                            signal_name,
                            core_dumped,
                            error_message,
                            lang_tag,
                        )
                        .await
                        .map_err(|_| russh::Error::SendError),
                    None => Ok(()),
                }
            }
            ChannelMsg::Success => {
                let _ = replies.send(true).await;
                Ok(())
            }
            ChannelMsg::Failure => {
                let _ = replies.send(false).await;
                Ok(())
            }
            _ => Ok(()),
        };
        if sent.is_err() {
            // The client is gone. An ordinary channel stops; the console keeps reading the
            // target (its client may come back) with no leg attached.
            if console {
                *guard = None;
                continue;
            }
            break;
        }
    }
    ctx.finish_tap(&mut stdout).await;
    ctx.finish_tap(&mut stderr).await;
}
