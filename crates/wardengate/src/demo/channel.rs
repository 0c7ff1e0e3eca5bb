//! One task per session channel: relays the client's data to the child's
//! stdin (or PTY), the child's output to the client with flow control, and
//! reports the exit the way sshd does: all output, EOF, `exit-status` or
//! `exit-signal`, CLOSE.

use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use russh::server::{Handle, Msg};
use russh::{Channel, ChannelId, ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::ChildStdin;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::sync::CancellationToken;

use super::process::{self, Exit, Io, Started};

/// Bytes read from the child per channel message (OpenSSH's packet size).
const READ_CHUNK: usize = 32 * 1024;
/// Once the child has exited, how long a silent PTY is still drained (output
/// of a background job still holding the terminal open) before EOF.
const PTY_DRAIN_IDLE: Duration = Duration::from_millis(250);

/// The state a channel task starts from; built by the handler on channel open.
pub(super) struct ChannelTask {
    pub(super) channel: Channel<Msg>,
    pub(super) handle: Handle,
    /// Receives the child once `shell`/`exec`/`subsystem` started it.
    pub(super) start: oneshot::Receiver<Started>,
    /// PTY window size; closed when the handler drops the channel.
    pub(super) size: watch::Receiver<Option<pty_process::Size>>,
    /// Cancelled when the connection ends or the server shuts down.
    pub(super) cancel: CancellationToken,
    pub(super) alive: mpsc::Sender<()>,
}

/// Where the client's data goes.
enum Sink {
    Pty(pty_process::OwnedWritePty),
    Pipe(ChildStdin),
}

impl Sink {
    async fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Pty(pty) => pty.write(buf).await,
            Sink::Pipe(stdin) => stdin.write(buf).await,
        }
    }
}

/// How the running phase ended.
enum Ending {
    /// The child exited and its output was relayed: report and close.
    Exited(ExitStatus),
    /// The child's exit status could not be read: close without a report
    /// (the client then exits 255, as with sshd when it has no status).
    Unknown,
    /// The channel or connection went away first: terminate the child.
    Abandoned,
}

impl ChannelTask {
    /// Runs the channel until it is closed.
    pub(super) async fn run(self) {
        let ChannelTask {
            channel,
            handle,
            mut start,
            size,
            cancel,
            alive,
        } = self;
        let id = channel.id();
        let (mut rx, tx) = channel.split();
        // Until a child runs, the client's messages must still be consumed:
        // russh stalls the whole connection when a channel's queue is full.
        let waited = loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break None,
                started = &mut start => match started {
                    Ok(started) => break Some((started, None)),
                    Err(_) => break None,
                },
                msg = rx.wait() => match msg {
                    None | Some(ChannelMsg::Close) => break None,
                    // The handler hands the child over before russh queues
                    // anything the client sent after its request, so a
                    // message found together with the child belongs to it.
                    Some(msg) => {
                        if let Ok(started) = start.try_recv() {
                            break Some((started, Some(msg)));
                        }
                    }
                },
            }
        };
        let Some((started, first)) = waited else {
            // Gone before a child ran. Refuse late hand-overs (the handler
            // then terminates the child itself) and terminate one that
            // slipped in meanwhile.
            start.close();
            if let Ok(mut orphan) = start.try_recv() {
                process::terminate(orphan.pgid, &mut orphan.child, false).await;
            }
            return;
        };
        let running = Running {
            id,
            tx: Arc::new(tx),
            handle,
            size,
            cancel,
        };
        running.run(started, rx, first).await;
        drop(alive);
    }
}

/// A channel whose child is running.
struct Running {
    id: ChannelId,
    tx: Arc<ChannelWriteHalf<Msg>>,
    handle: Handle,
    size: watch::Receiver<Option<pty_process::Size>>,
    cancel: CancellationToken,
}

impl Running {
    async fn run(mut self, started: Started, mut rx: ChannelReadHalf, first: Option<ChannelMsg>) {
        let Started {
            mut child,
            pgid,
            io,
        } = started;
        let (exited_tx, exited_rx) = watch::channel(false);
        let is_pty = matches!(io, Io::Pty(_));
        let (mut sink, pumps): (Option<Sink>, Vec<JoinHandle<()>>) = match io {
            Io::Pty(pty) => {
                let (reader, writer) = pty.into_split();
                let pump = tokio::spawn(pump_pty(reader, self.tx.clone(), exited_rx));
                (Some(Sink::Pty(writer)), vec![pump])
            }
            Io::Pipes {
                stdin,
                stdout,
                stderr,
            } => {
                let out = tokio::spawn(pump_pipe(stdout, self.tx.clone(), None));
                let err = tokio::spawn(pump_pipe(stderr, self.tx.clone(), Some(1)));
                (Some(Sink::Pipe(stdin)), vec![out, err])
            }
        };
        let aborts: Vec<AbortHandle> = pumps.iter().map(JoinHandle::abort_handle).collect();
        let mut outputs = std::pin::pin!(async move {
            for pump in pumps {
                let _ = pump.await;
            }
        });

        // Client data not yet written to the child.
        let mut pending: Vec<u8> = Vec::new();
        let mut written = 0;
        let mut status: Option<std::io::Result<ExitStatus>> = None;
        let mut outputs_done = false;
        let mut abandoned = false;
        if let Some(msg) = first {
            abandoned = !on_client_msg(msg, &mut sink, &mut pending, is_pty);
        }
        let ending = loop {
            if abandoned {
                break Ending::Abandoned;
            }
            if outputs_done && let Some(status) = &status {
                break match status {
                    Ok(status) => Ending::Exited(*status),
                    Err(_) => Ending::Unknown,
                };
            }
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => abandoned = true,
                changed = self.size.changed() => match changed {
                    Ok(()) => {
                        let size = *self.size.borrow_and_update();
                        if let (Some(size), Some(Sink::Pty(pty))) = (size, &sink)
                            && let Err(error) = pty.resize(size)
                        {
                            tracing::debug!(%error, "demo target: PTY resize failed");
                        }
                    }
                    // The handler dropped the channel: the client closed it.
                    Err(_) => abandoned = true,
                },
                exit = child.wait(), if status.is_none() => {
                    if let Err(error) = &exit {
                        tracing::warn!(%error, pgid, "demo target: waiting for the child failed");
                    }
                    status = Some(exit);
                    exited_tx.send_replace(true);
                }
                () = &mut outputs, if !outputs_done => {
                    outputs_done = true;
                    // Everything the child wrote has been queued: EOF follows it.
                    let _ = self.tx.eof().await;
                }
                result = write_some(&mut sink, &pending[written..]), if written < pending.len() => {
                    match result {
                        Ok(n) => written += n,
                        Err(error) => {
                            // The child closed its input (or exited): drop the rest.
                            tracing::debug!(%error, "demo target: writing to the child failed");
                            written = pending.len();
                            if !is_pty {
                                sink = None;
                            }
                        }
                    }
                    if written >= pending.len() {
                        pending.clear();
                        written = 0;
                    }
                }
                msg = rx.wait(), if pending.is_empty() => match msg {
                    Some(msg) => abandoned = !on_client_msg(msg, &mut sink, &mut pending, is_pty),
                    None => abandoned = true,
                },
            }
        };

        match ending {
            Ending::Exited(status) => {
                self.report(status).await;
                let _ = self.tx.close().await;
            }
            Ending::Unknown => {
                let _ = self.tx.close().await;
            }
            Ending::Abandoned => {
                for abort in &aborts {
                    abort.abort();
                }
                drop(sink);
                process::terminate(pgid, &mut child, status.is_some()).await;
            }
        }
    }

    /// Sends `exit-status` or `exit-signal` for the child's exit.
    async fn report(&self, status: ExitStatus) {
        match Exit::from_status(status) {
            Some(Exit::Status(code)) => {
                let _ = self.tx.exit_status(code).await;
            }
            Some(Exit::Signal(signal, core_dumped)) => {
                let _ = self
                    .handle
                    .exit_signal_request(
                        self.id,
                        process::signal_name(signal),
                        core_dumped,
                        String::new(),
                        String::new(),
                    )
                    .await;
            }
            None => {}
        }
    }
}

/// Applies one message from the client; false if the channel is gone.
fn on_client_msg(
    msg: ChannelMsg,
    sink: &mut Option<Sink>,
    pending: &mut Vec<u8>,
    is_pty: bool,
) -> bool {
    match msg {
        ChannelMsg::Data { data } if sink.is_some() => pending.extend_from_slice(&data),
        // Close the child's stdin. A PTY has no separate input to close.
        ChannelMsg::Eof if !is_pty => *sink = None,
        ChannelMsg::Close => return false,
        // Data after EOF is dropped; requests are answered by the handler;
        // window adjustments are tracked by russh itself.
        _ => {}
    }
    true
}

async fn write_some(sink: &mut Option<Sink>, buf: &[u8]) -> std::io::Result<usize> {
    match sink {
        Some(sink) => sink.write(buf).await,
        // The child's input is closed: discard.
        None => Ok(buf.len()),
    }
}

/// Sends `data` on the channel, waiting for the client's window.
async fn send(
    tx: &ChannelWriteHalf<Msg>,
    ext: Option<u32>,
    data: &[u8],
) -> Result<(), russh::Error> {
    match ext {
        None => tx.data_bytes(data.to_vec()).await,
        Some(ext) => tx.extended_data_bytes(ext, data.to_vec()).await,
    }
}

/// Relays a pipe (stdout, or stderr as extended data) until it closes.
async fn pump_pipe<R: AsyncRead + Unpin>(
    mut pipe: R,
    tx: Arc<ChannelWriteHalf<Msg>>,
    ext: Option<u32>,
) {
    let mut buf = vec![0; READ_CHUNK];
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => {
                tracing::debug!(%error, "demo target: reading the child's output failed");
                break;
            }
        };
        if send(&tx, ext, &buf[..n]).await.is_err() {
            break;
        }
    }
}

/// Relays the PTY until it reports EIO (every slave fd closed) or, once the
/// child has exited, until it stays silent for `PTY_DRAIN_IDLE`.
async fn pump_pty(
    mut pty: pty_process::OwnedReadPty,
    tx: Arc<ChannelWriteHalf<Msg>>,
    mut exited: watch::Receiver<bool>,
) {
    let mut buf = vec![0; READ_CHUNK];
    loop {
        let read = if *exited.borrow() {
            match tokio::time::timeout(PTY_DRAIN_IDLE, pty.read(&mut buf)).await {
                Ok(read) => read,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                read = pty.read(&mut buf) => read,
                changed = exited.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    continue;
                }
            }
        };
        let n = match read {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            // EIO: the slave side is closed, the terminal is done.
            Err(error) if error.raw_os_error() == Some(libc::EIO) => break,
            Err(error) => {
                tracing::debug!(%error, "demo target: reading the PTY failed");
                break;
            }
        };
        if send(&tx, None, &buf[..n]).await.is_err() {
            break;
        }
    }
}
