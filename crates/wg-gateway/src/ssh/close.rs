//! The close sequence of an SSH session: stop relaying, seal, tell the client, sever both legs,
//! report `closed` — exactly once, run by the connection task that owns the session.

use std::time::Duration;

use wg_domain::lifecycle::EndReason;
use wg_domain::time::now_millis;
use wg_proto::v1::{RecordingProgress, SessionReport};

use super::idle::notify_client;
use super::{ClientHandler, Shared, SshSession};
use crate::runtime::CloseOutcome;

/// The client leg as the close sequence finds it.
pub(super) enum ClientLeg<'a> {
    /// The client already disconnected.
    Gone,
    /// Still connected (a forced end): the running russh session, to wait for its end, and its
    /// handle.
    Live(
        std::pin::Pin<&'a mut russh::server::RunningSession<ClientHandler>>,
        &'a russh::server::Handle,
    ),
}

/// Runs the close sequence: stop relaying, seal, tell the client (for a forced end), sever both
/// legs, report `closed`. Runs once per session: a second caller (a client that attached while
/// the session was being closed) only tells its client and waits for the first one's outcome.
pub(super) async fn close(
    shared: &Shared,
    session: &SshSession,
    reason: EndReason,
    detail: Option<String>,
    notice: Option<String>,
    client: ClientLeg<'_>,
) -> CloseOutcome {
    let live = session.live().clone();
    let id = live.id;
    if session
        .closing
        .swap(true, std::sync::atomic::Ordering::SeqCst)
    {
        if let ClientLeg::Live(running, server) = client {
            let n = notice.unwrap_or_else(|| "wardengate: session closed".into());
            let _ = server
                .disconnect(russh::Disconnect::ByApplication, n, String::new())
                .await;
            let _ = tokio::time::timeout(Duration::from_secs(1), running).await;
        }
        return live
            .wait_outcome(Duration::from_secs(10))
            .await
            .unwrap_or(CloseOutcome {
                reason,
                seal: None,
                time_ms: now_millis(),
            });
    }
    shared.sessions.remove(&id);
    shared.journal.report(SessionReport {
        session_id: id.to_string(),
        state: "closing".into(),
        ..Default::default()
    });
    // 1. Stop both directions of every bridge; after this nothing reaches client or recorder.
    session.stop.cancel();
    let bridges: Vec<_> = session
        .bridges
        .lock()
        .map(|mut b| std::mem::take(&mut *b))
        .unwrap_or_default();
    for b in bridges {
        let abort = b.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), b)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    // 2. Seal the recording (flushes every accepted frame first).
    let mut seal = None;
    if let Some(rec) = live.started_recorder() {
        if let Some(n) = &notice {
            let _ = rec.record(wg_recording::Frame::Marker(n.clone())).await;
        }
        match rec.seal().await {
            Ok(s) => seal = Some(s),
            Err(e) => tracing::error!(session = %id, error = %e, "cannot seal the recording"),
        }
    }
    // 3. Tell the client why, then sever the client leg: the line goes on each channel's
    // stderr, followed by EOF and CLOSE so that the client prints it before it exits (a
    // disconnect sent right behind it would make OpenSSH exit with the line still unprinted);
    // a client that has not gone within a second is disconnected.
    if let ClientLeg::Live(running, server) = client {
        let n = notice
            .clone()
            .unwrap_or_else(|| "wardengate: session closed".into());
        let_client_go(session, server, running, n).await;
    }
    // 4. Sever the target leg. A forced end first signals the remote processes (SIGTERM to
    // each session channel's process group: sshd's "signal" request, RFC 4254 §6.9): without a
    // PTY nothing else would stop them, as a dropped connection does not (a PTY's processes
    // also get SIGHUP when sshd closes the terminal). Other channels ignore the request.
    if reason.is_forced() {
        for ch in snapshot(&session.target_channels) {
            let _ = ch.signal(russh::Sig::TERM).await;
        }
    }
    let _ = session
        .target
        .disconnect(russh::Disconnect::ByApplication, "session closed", "")
        .await;
    let time_ms = now_millis();
    let exit_status = session.exit_status.lock().ok().and_then(|e| *e);
    let detail = detail.or_else(|| {
        session
            .exit_signal
            .lock()
            .ok()
            .and_then(|s| s.clone())
            .map(|s| format!("remote command killed by signal {s}"))
    });
    shared.journal.report(SessionReport {
        session_id: id.to_string(),
        state: "closed".into(),
        time_ms,
        end_reason: reason.as_str().into(),
        end_detail: detail.unwrap_or_default(),
        has_exit_status: exit_status.is_some(),
        exit_status: exit_status.unwrap_or(0),
        recording: seal.as_ref().map(|s| RecordingProgress {
            chunks: s.chunks,
            bytes: s.bytes,
            status: s.status.as_str().into(),
            sha256: s.sha256.clone(),
        }),
        ..Default::default()
    });
    CloseOutcome {
        reason,
        seal,
        time_ms,
    }
}

/// Tells the client `notice` on every session channel's stderr, then ends those channels (EOF
/// and CLOSE, so that OpenSSH prints the line before it exits: a disconnect right behind it
/// would make it exit with the line unprinted), and waits up to a second for the client to go
/// (`running`: its russh session) before disconnecting it. The client leg of a forced end and of
/// a handed-off owner.
pub(super) async fn let_client_go(
    session: &SshSession,
    server: &russh::server::Handle,
    running: impl std::future::Future + Unpin,
    notice: String,
) {
    notify_client(session, server, &format!("\r\n{notice}\r\n")).await;
    for ch in snapshot(&session.client_channels) {
        let _ = server.eof(ch).await;
        let _ = server.close(ch).await;
    }
    if tokio::time::timeout(Duration::from_secs(1), running)
        .await
        .is_err()
    {
        let _ = server
            .disconnect(russh::Disconnect::ByApplication, notice, String::new())
            .await;
    }
}

/// A copy of what `m` holds (empty if a panic poisoned it).
pub(super) fn snapshot<T: Clone + Default>(m: &std::sync::Mutex<T>) -> T {
    m.lock().map(|v| v.clone()).unwrap_or_default()
}
