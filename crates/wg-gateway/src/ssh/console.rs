//! The client side of a bridged session channel, and the session's **console**: the channel
//! that runs the interactive shell on a PTY, whose client leg can be replaced while the target
//! leg and the PTY stay up (seed, "Reconnect behavior": `resume` re-attaches the same PTY;
//! "Ownership and handoff": the new owner attaches to the same PTY).
//!
//! The target → client relay task of every session channel writes through a [`ClientSide`].
//! For an ordinary channel the leg never changes. For the console, [`ClientSide::take_over`]
//! swaps the leg: the previous client is told why and released, the new one gets the current
//! screen redrawn (a VT model of the output, kept with the `vt100` parser), and output produced
//! while no client is attached is recorded but goes nowhere.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use russh::ChannelId;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// `attached_conn` while no leg is attached.
const NO_LEG: u64 = u64::MAX;

/// Scrollback kept by the screen model: only the visible screen is redrawn.
const SCROLLBACK_ROWS: usize = 0;

/// One client's end of a channel.
pub(crate) struct Leg {
    /// Its channel's output writer (stdout data, window-aware).
    pub(crate) out: Pin<Box<dyn AsyncWrite + Send>>,
    /// Its channel's write half (stderr writers, EOF, close).
    pub(crate) tx: russh::ChannelWriteHalf<russh::server::Msg>,
    /// Its connection's handle (exit-status and exit-signal requests).
    pub(crate) server: russh::server::Handle,
    /// Its channel on that connection.
    pub(crate) channel: ChannelId,
    /// Cancelled when another leg takes the console over (the connection then lets the session
    /// go without closing it), and by the connection itself when it ended or was let go (a
    /// handoff): a write to this leg waiting for window then gives up (`bridge::deliver`).
    pub(crate) released: CancellationToken,
    /// The connection the leg belongs to.
    pub(crate) conn: u64,
}

impl Leg {
    /// A leg for a client channel's write half.
    pub(crate) fn new(
        tx: russh::ChannelWriteHalf<russh::server::Msg>,
        server: russh::server::Handle,
        released: CancellationToken,
        conn: u64,
    ) -> Self {
        Leg {
            out: Box::pin(tx.make_writer()),
            channel: tx.id(),
            tx,
            server,
            released,
            conn,
        }
    }
}

/// The client side of one bridged channel.
pub(crate) struct ClientSide {
    /// The target channel's write half (the input side of the shell).
    pub(crate) target: Arc<russh::ChannelWriteHalf<russh::client::Msg>>,
    /// The attached leg; `None` while detached.
    pub(crate) leg: tokio::sync::Mutex<Option<Leg>>,
    /// The attached leg's release token, readable without waiting for the leg lock (which the
    /// output task holds while a slow client drains its window).
    release: std::sync::Mutex<Option<CancellationToken>>,
    /// The connection whose leg is attached ([`NO_LEG`] while detached): input from any other
    /// connection's leg is not relayed.
    attached_conn: AtomicU64,
    /// What the target has drawn (PTY channels only).
    screen: std::sync::Mutex<Option<vt100::Parser>>,
    /// Cancelled when the target closed the channel: nothing can attach any more.
    pub(crate) ended: CancellationToken,
    /// Bumped on every take-over; a detached session's timer stops when it changes.
    pub(crate) generation: watch::Sender<u64>,
}

impl ClientSide {
    /// A client side with its first leg attached.
    pub(crate) fn new(
        leg: Leg,
        target: Arc<russh::ChannelWriteHalf<russh::client::Msg>>,
    ) -> Arc<Self> {
        Arc::new(ClientSide {
            target,
            attached_conn: AtomicU64::new(leg.conn),
            release: std::sync::Mutex::new(Some(leg.released.clone())),
            leg: tokio::sync::Mutex::new(Some(leg)),
            screen: std::sync::Mutex::new(None),
            ended: CancellationToken::new(),
            generation: watch::channel(0).0,
        })
    }

    /// Whether connection `conn`'s leg is the attached one.
    pub(crate) fn is_attached(&self, conn: u64) -> bool {
        self.attached_conn.load(Ordering::SeqCst) == conn
    }

    /// Starts the screen model (the channel got a PTY of `cols` x `rows`).
    pub(crate) fn start_screen(&self, cols: u32, rows: u32) {
        if let Ok(mut s) = self.screen.lock() {
            *s = Some(vt100::Parser::new(dim(rows), dim(cols), SCROLLBACK_ROWS));
        }
    }

    /// Feeds target output to the screen model, if there is one.
    pub(crate) fn draw(&self, data: &[u8]) {
        if let Ok(mut s) = self.screen.lock()
            && let Some(p) = s.as_mut()
        {
            p.process(data);
        }
    }

    /// Resizes the screen model.
    pub(crate) fn resize(&self, cols: u32, rows: u32) {
        if let Ok(mut s) = self.screen.lock()
            && let Some(p) = s.as_mut()
        {
            p.set_size(dim(rows), dim(cols));
        }
    }

    /// Escape sequences that redraw the current screen (contents, modes, cursor) on a terminal
    /// of the same size; empty without a screen model.
    fn redraw(&self) -> Vec<u8> {
        self.screen
            .lock()
            .ok()
            .and_then(|s| {
                s.as_ref()
                    .map(|p| p.screen().state_formatted().into_bytes())
            })
            .unwrap_or_default()
    }

    /// Detaches the leg of connection `conn` if it is still the attached one; returns whether
    /// it was.
    pub(crate) async fn detach(&self, conn: u64) -> bool {
        let mut leg = self.leg.lock().await;
        // No leg: the output task dropped it when a write failed (the same client gone).
        let ours = leg.as_ref().is_none_or(|l| l.conn == conn);
        if ours {
            *leg = None;
            self.attached_conn.store(NO_LEG, Ordering::SeqCst);
        }
        ours
    }

    /// Replaces the attached leg with `new`: the previous client (if any) gets `notice` on its
    /// stderr, EOF and CLOSE and is released; the new client gets the current screen. Holding
    /// the leg lock throughout keeps target output from interleaving with the redraw.
    pub(crate) async fn take_over(&self, mut new: Leg, notice: &str) {
        let wait = std::time::Duration::from_secs(1);
        let mut leg = match tokio::time::timeout(wait, self.leg.lock()).await {
            Ok(l) => l,
            Err(_) => {
                // The output task is blocked on a client that does not read: release that
                // client (its blocked write gives up at once, its connection disconnects), then
                // take over.
                if let Some(r) = self.release.lock().ok().and_then(|r| r.clone()) {
                    r.cancel();
                }
                self.leg.lock().await
            }
        };
        self.attached_conn.store(new.conn, Ordering::SeqCst);
        if let Some(old) = leg.take() {
            let line = format!("\r\n{notice}\r\n");
            let mut err = old.tx.make_writer_ext(Some(1));
            let bounded = std::time::Duration::from_millis(500);
            let _ = tokio::time::timeout(bounded, err.write_all(line.as_bytes())).await;
            let _ = tokio::time::timeout(bounded, old.tx.eof()).await;
            let _ = tokio::time::timeout(bounded, old.tx.close()).await;
            old.released.cancel();
        }
        let redraw = self.redraw();
        if !redraw.is_empty() {
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(2),
                new.out.write_all(&redraw),
            )
            .await;
        }
        if let Ok(mut r) = self.release.lock() {
            *r = Some(new.released.clone());
        }
        self.attached_conn.store(new.conn, Ordering::SeqCst);
        *leg = Some(new);
        self.generation.send_modify(|g| *g += 1);
    }
}

/// A terminal dimension for the screen model (at least 1, at most `u16::MAX`).
fn dim(n: u32) -> std::num::NonZeroU16 {
    std::num::NonZeroU16::new(u16::try_from(n.clamp(1, u32::from(u16::MAX))).unwrap_or(1))
        .unwrap_or(std::num::NonZeroU16::MIN)
}
