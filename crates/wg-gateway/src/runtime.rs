//! The live session runtime: one [`LiveSession`] per session running on this gateway, held in a
//! sharded concurrent map ([`Runtime`]). No lock is held across I/O.
//!
//! Kills are sticky: [`LiveSession::kill`] records who and why once (a later kill never replaces
//! the first) and cancels a [`CancellationToken`], which — unlike `Notify::notify_waiters` —
//! cannot be lost if the session's owner starts waiting after the kill. The owner of the session
//! (the protocol module's connection task) runs the close sequence exactly once and publishes its
//! [`CloseOutcome`] through a watch channel that late waiters also see.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use wg_domain::SessionId;
use wg_domain::lifecycle::EndReason;
use wg_domain::time::now_millis;
use wg_proto::v1::{ProgressBatch, Pty, RecordingProgress, SessionProgress};
use wg_recording::{Recorder, Seal};

use crate::control::ControlClient;

/// Who killed a session and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillInfo {
    /// Why the session must end.
    pub reason: EndReason,
    /// The operator (for terminations).
    pub by: Option<String>,
    /// The reason text.
    pub detail: String,
}

/// How a session ended.
#[derive(Debug, Clone)]
pub struct CloseOutcome {
    /// End reason.
    pub reason: EndReason,
    /// The sealed recording, if the session was recorded.
    pub seal: Option<Seal>,
    /// When the close completed (ms since the epoch).
    pub time_ms: i64,
}

/// A session live on this gateway.
#[derive(Debug)]
pub struct LiveSession {
    /// Its ID.
    pub id: SessionId,
    /// Recording mode decided by policy (`full`, `metadata`, `off`).
    pub recording_mode: String,
    kill: CancellationToken,
    kill_info: OnceLock<KillInfo>,
    last_input_ms: AtomicI64,
    reported_input_ms: AtomicI64,
    idle_warned: AtomicBool,
    input: tokio::sync::Notify,
    pty: Mutex<Option<(String, u32, u32)>>,
    pty_dirty: AtomicBool,
    recorder: tokio::sync::OnceCell<Recorder>,
    reported_recording: Mutex<(u32, u64)>,
    outcome: watch::Sender<Option<CloseOutcome>>,
    /// Bumped when a handoff is accepted; the connection driving the session detaches its
    /// client (with `handoff_notice`) and keeps the session for the new owner.
    handoff: watch::Sender<u64>,
    handoff_notice: Mutex<String>,
}

impl LiveSession {
    /// A new live session.
    pub fn new(id: SessionId, recording_mode: String) -> Self {
        Self::with_kill_token(id, recording_mode, CancellationToken::new())
    }

    /// A new live session whose kill cancels `kill` (e.g. the connection's own token, so that
    /// the connection task notices a kill issued before or after it started waiting).
    pub fn with_kill_token(id: SessionId, recording_mode: String, kill: CancellationToken) -> Self {
        let now = now_millis();
        LiveSession {
            id,
            recording_mode,
            kill,
            kill_info: OnceLock::new(),
            last_input_ms: AtomicI64::new(now),
            reported_input_ms: AtomicI64::new(now),
            idle_warned: AtomicBool::new(false),
            input: tokio::sync::Notify::new(),
            pty: Mutex::new(None),
            pty_dirty: AtomicBool::new(false),
            recorder: tokio::sync::OnceCell::new(),
            reported_recording: Mutex::new((0, 0)),
            outcome: watch::channel(None).0,
            handoff: watch::channel(0).0,
            handoff_notice: Mutex::new(String::new()),
        }
    }

    /// Orders the session to end. The first kill wins and is never unset.
    pub fn kill(&self, info: KillInfo) {
        let _ = self.kill_info.set(info);
        self.kill.cancel();
    }

    /// The kill order, once given.
    pub fn kill_info(&self) -> Option<&KillInfo> {
        self.kill_info.get()
    }

    /// A token cancelled when the session is killed.
    pub fn kill_token(&self) -> &CancellationToken {
        &self.kill
    }

    /// Notes meaningful user input now.
    pub fn touch_input(&self) {
        self.last_input_ms.store(now_millis(), Ordering::Relaxed);
        // Wake the idle timer only while a warning is pending (not on every keystroke).
        if self.idle_warned.load(Ordering::Relaxed) {
            self.input.notify_one();
        }
    }

    /// The time of the last meaningful user input (ms since the epoch).
    pub fn last_input_ms(&self) -> i64 {
        self.last_input_ms.load(Ordering::Relaxed)
    }

    /// Marks whether an idle warning is pending (input then wakes [`LiveSession::input_after_warning`]).
    pub fn set_idle_warned(&self, warned: bool) {
        self.idle_warned.store(warned, Ordering::Relaxed);
    }

    /// Resolves at the next input after an idle warning (a stored permit: an input that came
    /// before the wait began is not lost).
    pub async fn input_after_warning(&self) {
        self.input.notified().await;
    }

    /// Notes the client's terminal.
    pub fn set_pty(&self, term: &str, cols: u32, rows: u32) {
        if let Ok(mut p) = self.pty.lock() {
            *p = Some((term.to_owned(), cols, rows));
        }
        self.pty_dirty.store(true, Ordering::Relaxed);
    }

    /// Notes a window change.
    pub fn resize(&self, cols: u32, rows: u32) {
        if let Ok(mut p) = self.pty.lock()
            && let Some(p) = p.as_mut()
        {
            p.1 = cols;
            p.2 = rows;
        }
        self.pty_dirty.store(true, Ordering::Relaxed);
    }

    /// The client's terminal, if any.
    pub fn pty(&self) -> Option<(String, u32, u32)> {
        self.pty.lock().ok().and_then(|p| p.clone())
    }

    /// The recorder, started on first use with `start` (only for recording mode `full`).
    ///
    /// # Errors
    /// The recorder's start error: a session whose mandatory recording cannot start must not
    /// proceed.
    pub async fn recorder<F, Fut>(
        &self,
        start: F,
    ) -> Result<Option<&Recorder>, wg_recording::RecordingError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Recorder, wg_recording::RecordingError>>,
    {
        if self.recording_mode != "full" {
            return Ok(None);
        }
        self.recorder.get_or_try_init(start).await.map(Some)
    }

    /// The recorder if it has started.
    pub fn started_recorder(&self) -> Option<&Recorder> {
        self.recorder.get()
    }

    /// Signals that a handoff was accepted; `notice` is shown to the client being detached.
    pub fn hand_off(&self, notice: &str) {
        if let Ok(mut n) = self.handoff_notice.lock() {
            *n = notice.to_owned();
        }
        self.handoff.send_modify(|g| *g += 1);
    }

    /// A receiver of the handoff count (see [`LiveSession::handoff_count`]).
    pub fn handoffs(&self) -> watch::Receiver<u64> {
        self.handoff.subscribe()
    }

    /// How many handoffs were accepted so far: a connection notes it when it gets the session
    /// and lets go when it grows.
    pub fn handoff_count(&self) -> u64 {
        *self.handoff.borrow()
    }

    /// The notice of the last handoff.
    pub fn handoff_notice(&self) -> String {
        self.handoff_notice
            .lock()
            .map(|n| n.clone())
            .unwrap_or_default()
    }

    /// Publishes the close outcome (once).
    pub fn publish_outcome(&self, outcome: CloseOutcome) {
        self.outcome.send_if_modified(|o| {
            if o.is_none() {
                *o = Some(outcome);
                true
            } else {
                false
            }
        });
    }

    /// Waits up to `timeout` for the close outcome.
    pub async fn wait_outcome(&self, timeout: Duration) -> Option<CloseOutcome> {
        let mut rx = self.outcome.subscribe();
        let wait = rx.wait_for(|o| o.is_some());
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(o)) => o.clone(),
            _ => None,
        }
    }
}

/// The live sessions of this gateway.
#[derive(Debug)]
pub struct Runtime {
    control: ControlClient,
    sessions: DashMap<SessionId, Arc<LiveSession>>,
    /// Kills that arrived before their session was registered (a terminate racing the decision's
    /// reply): applied at registration.
    pending_kills: DashMap<SessionId, KillInfo>,
}

impl Runtime {
    /// An empty runtime reporting to `control`.
    pub fn new(control: ControlClient) -> Self {
        Runtime {
            control,
            sessions: DashMap::new(),
            pending_kills: DashMap::new(),
        }
    }

    /// The control-plane client.
    pub fn control(&self) -> &ControlClient {
        &self.control
    }

    /// Registers a live session and returns a guard that removes it when dropped, so that a
    /// session cannot outlive the task that owns it.
    pub fn register(self: &Arc<Self>, session: Arc<LiveSession>) -> Registration {
        self.sessions.insert(session.id, session.clone());
        if let Some((_, kill)) = self.pending_kills.remove(&session.id) {
            session.kill(kill);
        }
        Registration {
            runtime: self.clone(),
            session,
        }
    }

    /// A live session.
    pub fn get(&self, id: &SessionId) -> Option<Arc<LiveSession>> {
        self.sessions.get(id).map(|s| s.clone())
    }

    /// The IDs of the live sessions.
    pub fn session_ids(&self) -> Vec<String> {
        self.sessions.iter().map(|s| s.key().to_string()).collect()
    }

    /// Signals an accepted handoff to a live session; `false` when it is not live here.
    pub fn hand_off(&self, id: &str, notice: &str) -> bool {
        match id.parse().ok().and_then(|id| self.get(&id)) {
            Some(s) => {
                s.hand_off(notice);
                true
            }
            None => false,
        }
    }

    /// Severs a live session the control plane has closed already (e.g. after declaring this
    /// gateway lost); its close sequence runs as for any kill.
    pub fn sever_closed(&self, id: &str) {
        if let Some(s) = id.parse().ok().and_then(|id| self.get(&id)) {
            tracing::warn!(session = %id, "the control plane closed this session; severing it");
            s.kill(KillInfo {
                reason: EndReason::GatewayLost,
                by: None,
                detail:
                    "the control plane closed this session while it could not reach the gateway"
                        .into(),
            });
        }
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Terminates a live session and waits for its close outcome (recording sealed, legs
    /// severed). `end_reason` is recorded as the session's end (`terminated` when empty or
    /// unknown; `superseded` when a reauthenticated session replaces it). `None` when the
    /// session is not live here.
    pub async fn terminate(
        &self,
        id: &str,
        operator: &str,
        reason: &str,
        end_reason: &str,
    ) -> Option<CloseOutcome> {
        let id: SessionId = id.parse().ok()?;
        let kill = KillInfo {
            reason: end_reason.parse().unwrap_or(EndReason::Terminated),
            by: Some(operator.to_owned()).filter(|s| !s.is_empty()),
            detail: reason.to_owned(),
        };
        let session = match self.get(&id) {
            Some(s) => s,
            None => {
                // The decision may still be on its way to the connection that asked for it:
                // leave the kill for the registration, and wait a moment for it.
                self.pending_kills.insert(id, kill.clone());
                let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
                loop {
                    if let Some(s) = self.get(&id) {
                        break s;
                    }
                    if tokio::time::Instant::now() >= deadline {
                        self.pending_kills.remove(&id);
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        session.kill(kill);
        session.wait_outcome(Duration::from_secs(8)).await
    }

    /// Kills every live session (gateway shutdown) and waits for them to close.
    pub async fn close_all(&self, why: &str) {
        let all: Vec<Arc<LiveSession>> = self.sessions.iter().map(|s| s.clone()).collect();
        for s in &all {
            s.kill(KillInfo {
                reason: EndReason::GatewayError,
                by: None,
                detail: why.to_owned(),
            });
        }
        for s in all {
            let _ = s.wait_outcome(Duration::from_secs(5)).await;
        }
    }

    /// Collects what changed since the last report.
    fn progress_batch(&self) -> ProgressBatch {
        let mut batch = ProgressBatch::default();
        for entry in self.sessions.iter() {
            let s = entry.value();
            let mut p = SessionProgress {
                session_id: s.id.to_string(),
                ..Default::default()
            };
            let mut changed = false;
            let last = s.last_input_ms.load(Ordering::Relaxed);
            if s.reported_input_ms.swap(last, Ordering::Relaxed) != last {
                p.last_input_ms = last;
                changed = true;
            }
            if s.pty_dirty.swap(false, Ordering::Relaxed)
                && let Some((term, cols, rows)) = s.pty()
            {
                p.pty = Some(Pty { term, cols, rows });
                changed = true;
            }
            if let Some(rec) = s.started_recorder() {
                let pr = rec.progress();
                if let Ok(mut last) = s.reported_recording.lock()
                    && *last != (pr.chunks, pr.bytes)
                {
                    *last = (pr.chunks, pr.bytes);
                    p.recording = Some(RecordingProgress {
                        chunks: pr.chunks,
                        bytes: pr.bytes,
                        status: "recording".into(),
                        sha256: String::new(),
                    });
                    changed = true;
                }
            }
            if changed {
                batch.sessions.push(p);
            }
        }
        batch
    }
}

/// Removes a session from the runtime when dropped.
#[derive(Debug)]
pub struct Registration {
    runtime: Arc<Runtime>,
    session: Arc<LiveSession>,
}

impl Registration {
    /// The session.
    pub fn session(&self) -> &Arc<LiveSession> {
        &self.session
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.runtime.sessions.remove(&self.session.id);
    }
}

/// Reports live-session progress every `interval` until `shutdown`.
pub(crate) async fn run_progress_reporter(
    runtime: Arc<Runtime>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let batch = runtime.progress_batch();
        if batch.sessions.is_empty() {
            continue;
        }
        if let Err(e) = runtime.control.progress(batch).await {
            tracing::warn!(error = %e, "cannot report session progress");
        }
    }
}
