//! The SSH protocol module: listener, client authentication, access decision, target leg,
//! channel relay and the close sequence.
//!
//! One Wardengate session is one client SSH connection to one target account. Login names are
//! `ACTOR:TARGET[:ACCOUNT]` (PRODUCT.md §5). Flow:
//!
//! 1. `auth_publickey` (signature already verified by russh): the control plane checks the key
//!    belongs to ACTOR. Unknown keys are rejected; a malformed login name is accepted only when
//!    the key alone identifies one actor, so that the client can be told what is wrong.
//! 2. The first channel request (shell, exec or subsystem on the first session channel, or a
//!    port forward): the access decision (control plane) and, if admitted, the target leg with
//!    the injected account. The decision waits for it because only then is it known whether the
//!    client wants an interactive shell on a terminal — the only kind of connection that may
//!    resume a detached session or take one over. pty-req and env before it are kept and replayed.
//!    A denial or a target failure is delivered in-band on that channel — one line on stderr and
//!    exit status 1 — because SSH offers no way to explain a refusal during authentication.
//! 3. Each client session channel is bridged to a target channel ([`bridge`]).
//! 4. Close sequence (exactly once, by the connection task): stop the relay, seal the recording,
//!    tell the client why (for a forced end), sever both legs, report `closed`.

mod bridge;
mod close;
mod console;
mod idle;
mod tap;
mod target;

use close::{ClientLeg, close};
use idle::IdleClock;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use russh::server::{Auth, Msg, Session};
use russh::{Channel, ChannelId};
use tokio_util::sync::CancellationToken;
use wg_domain::SessionId;
use wg_domain::error::ErrorCode;
use wg_domain::lifecycle::EndReason;
use wg_domain::login::LoginName;
use wg_proto::v1::{SessionReport, SessionRequest, credential};
use wg_recording::RecorderConfig;
use zeroize::Zeroizing;

use crate::control::ControlClient;
use crate::journal::Journal;
use crate::runtime::{KillInfo, LiveSession, Registration, Runtime};

/// How long a connection may stay without an admitted session (authentication and decision),
/// as sshd's `LoginGraceTime`.
const LOGIN_GRACE: Duration = Duration::from_secs(120);

/// Cipher preference of both legs: AES-GCM first (hardware-accelerated on current CPUs, and
/// what OpenSSH clients offer), then ChaCha20-Poly1305.
const CIPHERS: &[russh::cipher::Name] = &[
    russh::cipher::AES_128_GCM,
    russh::cipher::AES_256_GCM,
    russh::cipher::CHACHA20_POLY1305,
    russh::cipher::AES_256_CTR,
];

/// Ciphers offered to clients on a CPU with AES instructions: no ChaCha20-Poly1305 (see
/// [`client_leg_preferred`]).
const CLIENT_CIPHERS_AES: &[russh::cipher::Name] = &[
    russh::cipher::AES_128_GCM,
    russh::cipher::AES_256_GCM,
    russh::cipher::AES_256_CTR,
];

/// Ciphers offered to clients on a CPU without AES instructions: ChaCha20-Poly1305 first.
const CLIENT_CIPHERS_SOFT: &[russh::cipher::Name] = &[
    russh::cipher::CHACHA20_POLY1305,
    russh::cipher::AES_128_GCM,
    russh::cipher::AES_256_GCM,
    russh::cipher::AES_256_CTR,
];

/// Algorithm preferences of the target leg (we are the SSH client there, so our order decides).
fn preferred() -> russh::Preferred {
    russh::Preferred {
        cipher: std::borrow::Cow::Borrowed(CIPHERS),
        ..Default::default()
    }
}

/// Algorithm preferences of the client leg. There the *client's* order decides (RFC 4253
/// §7.1: the first cipher on the client's list that the server also offers), and OpenSSH
/// clients list chacha20-poly1305 first. A gateway decrypts and re-encrypts every byte of
/// every session, and ChaCha20-Poly1305 is its most expensive cipher on a CPU with AES
/// instructions: in a profile of a 1 GiB upload, ring's Poly1305 alone took more CPU than
/// AES-GCM encryption on the target leg and the recording's SHA-256 together. So on such CPUs
/// the client leg offers AES-GCM and AES-256-CTR only. OpenSSH then picks aes256-ctr (its list
/// puts CTR before GCM) with an encrypt-then-MAC HMAC-SHA-256, which costs the gateway less
/// CPU per GiB than ChaCha20-Poly1305 (figures in the README); clients that put GCM first get
/// GCM. CTR stays offered because
/// some clients speak nothing else (paramiko, hence Ansible's and Fabric's paramiko
/// transports). On CPUs without AES instructions ChaCha20-Poly1305 is offered first, where it
/// is the faster one.
fn client_leg_preferred() -> russh::Preferred {
    let cipher = if aes_accelerated() {
        CLIENT_CIPHERS_AES
    } else {
        CLIENT_CIPHERS_SOFT
    };
    russh::Preferred {
        cipher: std::borrow::Cow::Borrowed(cipher),
        ..Default::default()
    }
}

/// Whether this CPU has AES and carry-less multiply instructions (fast AES-GCM).
fn aes_accelerated() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// SSH listener settings.
#[derive(Debug, Clone)]
pub struct SshSettings {
    /// Gateway name.
    pub gateway: String,
    /// Recording spool.
    pub recordings_root: std::path::PathBuf,
    /// `gateway.maxActive`.
    pub max_active: Option<u32>,
}

struct Shared {
    settings: SshSettings,
    config: Arc<russh::server::Config>,
    control: ControlClient,
    /// Where lifecycle reports and gateway-decided audit events go (delivered in order).
    journal: Arc<Journal>,
    runtime: Arc<Runtime>,
    recordings: Arc<RecorderConfig>,
    /// The SSH sessions live here, for re-attachment (resume, handoff).
    sessions: dashmap::DashMap<SessionId, Arc<SshSession>>,
    /// Numbers client connections (a console leg names its connection).
    connections: std::sync::atomic::AtomicU64,
    /// The threads the connections run on.
    workers: crate::workers::Workers,
}

/// The SSH listener of a gateway.
pub struct SshListener {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SshListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshListener")
            .field("gateway", &self.shared.settings.gateway)
            .finish()
    }
}

impl SshListener {
    /// A listener presenting `host_key`.
    pub fn new(
        settings: SshSettings,
        host_key: russh::keys::PrivateKey,
        control: ControlClient,
        journal: Arc<Journal>,
        runtime: Arc<Runtime>,
    ) -> Self {
        let config = russh::server::Config {
            server_id: russh::SshId::Standard(
                format!("SSH-2.0-Wardengate_{}", env!("CARGO_PKG_VERSION")).into(),
            ),
            methods: russh::MethodSet::from(&[russh::MethodKind::PublicKey][..]),
            auth_rejection_time: Duration::from_millis(200),
            auth_rejection_time_initial: Some(Duration::ZERO),
            keys: vec![host_key],
            preferred: client_leg_preferred(),
            // Idle is decided by policy, not by the transport.
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_max: 4,
            window_size: 4 * 1024 * 1024,
            nodelay: true,
            ..Default::default()
        };
        let recordings = Arc::new(RecorderConfig::new(settings.recordings_root.clone()));
        SshListener {
            shared: Arc::new(Shared {
                settings,
                config: Arc::new(config),
                control,
                journal,
                runtime,
                recordings,
                sessions: dashmap::DashMap::new(),
                connections: std::sync::atomic::AtomicU64::new(0),
                workers: crate::workers::Workers::per_core(),
            }),
        }
    }

    /// Accepts connections until `shutdown`.
    pub async fn serve(self, listener: tokio::net::TcpListener, shutdown: CancellationToken) {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let shared = self.shared.clone();
                    self.shared
                        .workers
                        .spawn(stream, move |stream| connection(shared, stream, peer));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Read buffer in front of each leg's socket, in bytes.
///
/// russh reads a packet in two exact reads (the first cipher block, for the length, then the
/// rest) and then a third that finds the socket empty: three `recvfrom` calls per packet, each
/// a kernel entry on the echo path of every keystroke. Behind a buffer, one `recvfrom` takes
/// the whole packet (and, when it returns less than asked, tokio marks the socket drained, so
/// the next read waits in `epoll` without a syscall). Bulk reads larger than the buffer bypass
/// it, so a transfer copies at most this much per packet an extra time.
pub(crate) const READ_BUFFER_BYTES: usize = 4096;

/// A leg's socket behind its read buffer (writes pass straight through); see
/// [`READ_BUFFER_BYTES`].
pub(crate) fn buffered(
    stream: tokio::net::TcpStream,
) -> tokio::io::BufReader<tokio::net::TcpStream> {
    tokio::io::BufReader::with_capacity(READ_BUFFER_BYTES, stream)
}

/// The line a client is shown when its session is ended by the gateway or an operator.
fn notice_for(k: &KillInfo) -> String {
    // Control characters are stripped: the text goes to the user's terminal.
    let detail: String = k.detail.chars().filter(|c| !c.is_control()).collect();
    match (&k.reason, &k.by) {
        (EndReason::Terminated, Some(by)) => {
            format!("wardengate: session terminated by {by}: {detail}")
        }
        (EndReason::Terminated, None) => format!("wardengate: session terminated: {detail}"),
        (r, _) => format!("wardengate: session ended ({r}): {detail}"),
    }
}

/// The admission of a connection (decision and target leg), as the connection task sees it.
#[derive(Default)]
struct Admission {
    /// Set when the admission starts.
    admitting: std::sync::atomic::AtomicBool,
    /// Notified (with a stored permit) when it has finished, admitted or refused.
    done: tokio::sync::Notify,
}

/// The state of a client connection after authentication.
enum ConnState {
    Authenticating,
    /// Authenticated; the decision waits for the first channel request.
    Authenticated,
    /// The attempt was refused: the line to show the client.
    Refused(String),
    Ready(Arc<SshSession>),
}

/// A brokered session: the target leg and the bridges.
struct SshSession {
    registration: Registration,
    target: russh::client::Handle<target::TargetHandler>,
    stop: CancellationToken,
    bridges: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    client_channels: Mutex<Vec<ChannelId>>,
    /// Every target session channel opened for the session (write halves; not port forwards),
    /// for the close sequence's signal to the target's processes.
    target_channels: Mutex<Vec<Arc<russh::ChannelWriteHalf<russh::client::Msg>>>>,
    exit_status: Arc<Mutex<Option<i32>>>,
    exit_signal: Arc<Mutex<Option<String>>>,
    active_reported: std::sync::atomic::AtomicBool,
    /// The owner's policy settings; replaced when a new owner attaches after a handoff.
    settings: Mutex<Settings>,
    /// The console (PTY shell channel), once running: what resume and handoff re-attach.
    console: Arc<OnceLock<Arc<console::ClientSide>>>,
    /// Set by the first close sequence; a second caller only waits for the outcome.
    closing: std::sync::atomic::AtomicBool,
}

/// What the owner's policy says about a running session.
#[derive(Clone, Debug)]
struct Settings {
    /// The owner.
    owner: String,
    /// Policy `forwarding.local`: allowed `ssh -L` destinations.
    forward_local: Vec<String>,
    /// Policy `idle.timeout`.
    idle_timeout: Duration,
    /// Policy `idle.grace`.
    idle_grace: Duration,
    /// Policy `reconnect.mode`: `resume`, `reauth` or `strict`.
    reconnect_mode: String,
    /// Policy `reconnect.grace`.
    reconnect_grace: Duration,
}

impl Settings {
    /// The settings a decision carries (zero values fall back to the seed's defaults).
    fn of(d: &wg_proto::v1::SessionDecision) -> Self {
        let or = |ms: u64, default_s: u64| {
            Duration::from_millis(if ms > 0 { ms } else { default_s * 1000 })
        };
        Settings {
            owner: d.owner.clone(),
            forward_local: d.forward_local.clone(),
            idle_timeout: or(d.idle_timeout_ms, 15 * 60),
            idle_grace: or(d.idle_grace_ms, 60),
            reconnect_mode: if d.reconnect_mode.is_empty() {
                "strict".into()
            } else {
                d.reconnect_mode.clone()
            },
            // A decision that names a mode carries the policy's grace, 0 included.
            reconnect_grace: if d.reconnect_mode.is_empty() {
                or(d.reconnect_grace_ms, 120)
            } else {
                Duration::from_millis(d.reconnect_grace_ms)
            },
        }
    }
}

impl SshSession {
    fn live(&self) -> &Arc<LiveSession> {
        self.registration.session()
    }

    fn settings(&self) -> Settings {
        self.settings
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// One setting, read under the lock without copying the others.
    fn setting<T>(&self, f: impl FnOnce(&Settings) -> T) -> T {
        match self.settings.lock() {
            Ok(s) => f(&s),
            Err(p) => f(&p.into_inner()),
        }
    }

    fn idle_timeout(&self) -> Duration {
        self.setting(|s| s.idle_timeout)
    }

    fn idle_grace(&self) -> Duration {
        self.setting(|s| s.idle_grace)
    }

    /// The running console, if the session has one whose shell is still up.
    fn live_console(&self) -> Option<Arc<console::ClientSide>> {
        self.console
            .get()
            .filter(|c| !c.ended.is_cancelled())
            .cloned()
    }
}

struct ClientHandler {
    shared: Arc<Shared>,
    peer: SocketAddr,
    login: Option<Result<LoginName, String>>,
    actor: Option<String>,
    state: ConnState,
    kill: CancellationToken,
    slot: Arc<OnceLock<Arc<SshSession>>>,
    /// The refusal line of a refused attempt, for the disconnect message.
    refusal: Arc<OnceLock<String>>,
    /// Whether an admission is under way, and its completion.
    admission: Arc<Admission>,
    /// Bridged channels, for forwarding channel requests in order.
    pairs: HashMap<ChannelId, bridge::ChannelPair>,
    /// This connection's number.
    conn: u64,
    /// Cancelled when another connection takes over this one's console leg.
    released: CancellationToken,
    /// The decision was an attach: the first session channel takes over the console.
    attach_pending: bool,
    /// The client's SSH ident, for the decision.
    ident: String,
    /// The first session channel, held until its shell/exec/subsystem request decides.
    pending: Option<Pending>,
    /// The session's handoff count when this connection got it (see `End::HandedOff`).
    handoff_base: Arc<OnceLock<u64>>,
    /// The control plane could not be asked about the key: the refusal line. Such a connection
    /// is never authenticated as anyone; it only hears why it is refused.
    unreachable: Option<String>,
    /// The refusal is an operator's termination of the attempt while it was being decided: its
    /// channel gets the `wardengate: session terminated by …` line and no exit status, so the
    /// client exits 255 as for any terminated session (a denial gets exit status 1).
    refusal_is_end: bool,
}

/// The first session channel before the decision, with the requests that came before it.
struct Pending {
    channel: Channel<Msg>,
    pty: Option<bridge::Request>,
    env: Vec<(String, String)>,
}

async fn connection(shared: Arc<Shared>, stream: tokio::net::TcpStream, peer: SocketAddr) {
    let kill = CancellationToken::new();
    let slot: Arc<OnceLock<Arc<SshSession>>> = Arc::new(OnceLock::new());
    let refusal: Arc<OnceLock<String>> = Arc::new(OnceLock::new());
    let admission = Arc::new(Admission::default());
    let released = CancellationToken::new();
    let handoff_base: Arc<OnceLock<u64>> = Arc::new(OnceLock::new());
    let conn = shared
        .connections
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let handler = ClientHandler {
        shared: shared.clone(),
        peer,
        login: None,
        actor: None,
        state: ConnState::Authenticating,
        kill: kill.clone(),
        slot: slot.clone(),
        refusal: refusal.clone(),
        admission: admission.clone(),
        pairs: HashMap::new(),
        conn,
        released: released.clone(),
        attach_pending: false,
        ident: String::new(),
        pending: None,
        handoff_base: handoff_base.clone(),
        unreachable: None,
        refusal_is_end: false,
    };
    let running =
        match russh::server::run_stream(shared.config.clone(), buffered(stream), handler).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "SSH handshake failed");
                return;
            }
        };
    let server = running.handle();
    tokio::pin!(running);
    let mut idle = IdleClock::default();
    let accepted = tokio::time::Instant::now();
    let mut handoffs: Option<(tokio::sync::watch::Receiver<u64>, u64)> = None;
    let ended = loop {
        if handoffs.is_none()
            && let (Some(s), Some(base)) = (slot.get(), handoff_base.get())
        {
            handoffs = Some((s.live().handoffs(), *base));
        }
        let handed_off = async {
            match handoffs.as_mut() {
                // A handoff accepted since this connection got the session (also one accepted
                // before this loop looked): this client is let go.
                Some((rx, base)) => {
                    let base = *base;
                    if rx.wait_for(|n| *n > base).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        let wait = idle.next_wake(slot.get());
        // The session's own kill token: for a connection that attached to a running session it
        // is not this connection's token.
        let session_kill = slot.get().map(|s| s.live().kill_token().clone());
        let session_killed = async {
            match &session_kill {
                Some(k) => k.cancelled().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = kill.cancelled() => break End::Killed,
            _ = session_killed => break End::Killed,
            _ = released.cancelled() => break End::Released,
            _ = handed_off => break End::HandedOff,
            _ = &mut running => break End::ClientGone,
            _ = wait => {}
        }
        match slot.get() {
            Some(session) => idle.check(&shared, session, &server).await,
            // Like sshd's LoginGraceTime: no admitted session in time, no connection.
            None if accepted.elapsed() >= LOGIN_GRACE => break End::Killed,
            None => {}
        }
    };
    // A kill that arrives while the attempt is being admitted (decision made, target leg being
    // opened) is for a session that exists: wait for the admission to finish, then close it
    // through the ordinary close sequence.
    let killed = ended == End::Killed;
    if killed
        && slot.get().is_none()
        && admission
            .admitting
            .load(std::sync::atomic::Ordering::SeqCst)
    {
        let _ = tokio::time::timeout(Duration::from_secs(20), admission.done.notified()).await;
    }
    let Some(session) = slot.get().cloned() else {
        // Refused, or never authenticated: close the connection (the refusal line, if any, was
        // written on the client's channel before the kill).
        if killed {
            let _ = server
                .disconnect(
                    russh::Disconnect::ByApplication,
                    match refusal.get() {
                        Some(line) => format!("wardengate: {line}"),
                        None => "wardengate: authentication timed out".into(),
                    },
                    String::new(),
                )
                .await;
            let _ = tokio::time::timeout(Duration::from_secs(2), &mut running).await;
        }
        return;
    };
    match ended {
        End::HandedOff => {
            // A client let go (here) or gone (below) gets no more output: a write to it still
            // waiting for window gives up. russh's would wait forever on a dead connection,
            // holding the console's leg lock that `detach` needs.
            released.cancel();
            // A handoff was accepted: this (previous owner's) client is told and let go at once;
            // the session waits for the new owner to attach.
            let notice = session.live().handoff_notice();
            if let Some(console) = session.live_console() {
                console.detach(conn).await;
            }
            if let Some(rec) = session.live().started_recorder() {
                let _ = rec
                    .record(wg_recording::Frame::Marker(notice.clone()))
                    .await;
            }
            close::let_client_go(&session, &server, &mut running, notice).await;
            detach_or_close(&shared, &session, conn, true).await;
        }
        End::Released => {
            // Another connection took this one's console over (a handoff, or its owner
            // resumed elsewhere): the session goes on there. This client was told why.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = server
                .disconnect(
                    russh::Disconnect::ByApplication,
                    "wardengate: the session was taken over by another connection".into(),
                    String::new(),
                )
                .await;
        }
        End::ClientGone if !session.live().kill_token().is_cancelled() => {
            released.cancel();
            detach_or_close(&shared, &session, conn, false).await;
        }
        End::Killed | End::ClientGone => {
            let kill_info = session.live().kill_info().cloned();
            let (reason, detail, notice) = match (&kill_info, killed) {
                (Some(k), true) => (k.reason, Some(k.detail.clone()), Some(notice_for(k))),
                (Some(k), false) => (k.reason, Some(k.detail.clone()), None),
                _ => (EndReason::ClientExit, None, None),
            };
            let client = if killed {
                ClientLeg::Live(running.as_mut(), &server)
            } else {
                ClientLeg::Gone
            };
            let outcome = close(&shared, &session, reason, detail, notice, client).await;
            session.live().publish_outcome(outcome);
        }
    }
}

/// How a connection's watch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The session (or the attempt) was killed.
    Killed,
    /// The client connection ended.
    ClientGone,
    /// Another connection took the session's console over.
    Released,
    /// A handoff was accepted: this client is let go, the session waits for the new owner.
    HandedOff,
}

/// Keeps a session whose client leg dropped, when its policy lets the client come back
/// (`resume`, `reauth`) and its console is still running: the session is reported `detached`
/// and waits for the reconnect grace. Returns `false` when the session must close instead.
/// `handoff`: the client was let go for a new owner, who gets the grace (at least 120 s) to
/// attach whatever the reconnect mode.
/// [`detach`]es the session, or closes it (`client_exit`) when it cannot wait for its client.
async fn detach_or_close(
    shared: &Arc<Shared>,
    session: &Arc<SshSession>,
    conn: u64,
    handoff: bool,
) {
    if !detach(shared, session, conn, handoff).await {
        let outcome = close(
            shared,
            session,
            EndReason::ClientExit,
            None,
            None,
            ClientLeg::Gone,
        )
        .await;
        session.live().publish_outcome(outcome);
    }
}

async fn detach(shared: &Arc<Shared>, session: &Arc<SshSession>, conn: u64, handoff: bool) -> bool {
    let mut settings = session.settings();
    if handoff {
        settings.reconnect_grace = settings.reconnect_grace.max(Duration::from_secs(120));
    } else if settings.reconnect_mode == "strict" {
        return false;
    }
    let Some(console) = session.live_console() else {
        return false;
    };
    if !console.detach(conn).await {
        // Not this connection's leg: it was taken over, the session goes on elsewhere.
        return true;
    }
    let live = session.live();
    let grace = settings.reconnect_grace;
    if let Some(rec) = live.started_recorder() {
        let _ = rec
            .record(wg_recording::Frame::Marker(format!(
                "client leg of {} dropped; detached for up to {} ({})",
                settings.owner,
                wg_domain::time::format_duration(grace),
                settings.reconnect_mode
            )))
            .await;
    }
    // Waited for (briefly), so that a client coming right back finds the session detached; a
    // control plane that is away hears of it later (the session stays detached meanwhile).
    let heard = shared
        .journal
        .report_acked(
            SessionReport {
                session_id: live.id.to_string(),
                state: "detached".into(),
                ..Default::default()
            },
            Duration::from_secs(2),
        )
        .await;
    if !heard {
        tracing::warn!(session = %live.id, "the control plane has not heard of the detach yet");
    }
    tracing::info!(session = %live.id, grace = ?grace, "session detached");
    let mut attached = console.generation.subscribe();
    let shared = shared.clone();
    let session = session.clone();
    tokio::spawn(async move {
        let live = session.live().clone();
        let (reason, detail) = tokio::select! {
            biased;
            _ = live.kill_token().cancelled() => match live.kill_info() {
                Some(k) => (k.reason, Some(k.detail.clone())),
                None => (EndReason::Terminated, None),
            },
            // Re-attached: the new connection watches the session from now on.
            _ = attached.changed() => return,
            _ = console.ended.cancelled() => (EndReason::ClientExit, None),
            _ = tokio::time::sleep(grace) => {
                // A take-over that won the race keeps the session; one that comes after the
                // kill finds it ending.
                let leg = console.leg.lock().await;
                if leg.is_some() {
                    return;
                }
                let detail = format!(
                    "the client did not come back within the {} reconnect grace",
                    wg_domain::time::format_duration(grace)
                );
                live.kill(KillInfo {
                    reason: EndReason::ReconnectExpired,
                    by: None,
                    detail: detail.clone(),
                });
                drop(leg);
                (EndReason::ReconnectExpired, Some(detail))
            }
        };
        let outcome = close(&shared, &session, reason, detail, None, ClientLeg::Gone).await;
        live.publish_outcome(outcome);
    });
    true
}

impl ClientHandler {
    /// Decides the attempt and opens the target leg; returns the refusal line on failure.
    async fn admit(
        &mut self,
        client_software: String,
        interactive: bool,
        may_defer: bool,
    ) -> Result<Option<Arc<SshSession>>, String> {
        let login = match self.login.clone() {
            Some(Ok(l)) => l,
            Some(Err(msg)) => return Err(msg),
            None => return Err("not authenticated".into()),
        };
        let actor = self.actor.clone().unwrap_or_default();
        // Fail closed while the control plane cannot hear what this gateway does.
        self.shared.journal.accepting()?;
        let mut decision = self
            .shared
            .control
            .request_session(SessionRequest {
                actor: actor.clone(),
                target: login.target.clone(),
                account: login.account.clone().unwrap_or_default(),
                protocol: "ssh".into(),
                client_ip: self.peer.ip().to_string(),
                client_software,
                gateway_max_active: self.shared.settings.max_active.unwrap_or(0),
                interactive,
                may_defer,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("control plane unreachable: {e}"))?;
        if decision.deferred {
            return Ok(None);
        }
        if !decision.allowed {
            if decision.error_code == ErrorCode::Terminated.as_str() {
                // Control characters are stripped: the operator's reason goes to a terminal.
                self.refusal_is_end = true;
                return Err(decision
                    .message
                    .chars()
                    .filter(|c| !c.is_control())
                    .collect());
            }
            let mut line = format!(
                "access denied ({}): {}",
                decision.error_code, decision.message
            );
            if !decision.scope.is_empty() {
                line = format!(
                    "access denied ({}, scope={}, limit={}): {}",
                    decision.error_code, decision.scope, decision.limit, decision.message
                );
            }
            return Err(line);
        }
        let id: SessionId = decision
            .session_id
            .parse()
            .map_err(|_| "control plane returned a malformed session ID".to_string())?;
        if decision.attach {
            return self.admit_attach(id, &decision).map(Some);
        }
        let live = Arc::new(LiveSession::with_kill_token(
            id,
            decision.recording_mode.clone(),
            self.kill.clone(),
        ));
        let registration = self.shared.runtime.register(live);
        let credential = match decision.credential.take().and_then(|c| c.secret) {
            Some(credential::Secret::Password(p)) => {
                target::TargetCredential::Password(Zeroizing::new(p))
            }
            Some(credential::Secret::PrivateKey(k)) => {
                target::TargetCredential::PrivateKey(Zeroizing::new(k))
            }
            None => {
                return Err(self
                    .fail_open(id, "the control plane released no credential".into())
                    .await);
            }
        };
        let pinned = (!decision.host_key.is_empty()).then_some(decision.host_key.as_str());
        let leg = match target::connect(
            &decision.target_address,
            pinned,
            &decision.account,
            credential,
        )
        .await
        {
            Ok(leg) => leg,
            Err(e) => {
                return Err(self
                    .fail_open(id, format!("target {} unavailable: {e}", decision.target))
                    .await);
            }
        };
        // Killed while the target leg was being opened (a terminate during set-up): the
        // connection task runs the close sequence; `opened` would now be an illegal report. (A
        // control plane that closed the session meanwhile answers the report by naming the
        // session to sever.)
        if !self.kill.is_cancelled() {
            self.shared.journal.report(SessionReport {
                session_id: id.to_string(),
                state: "opened".into(),
                observed_host_key: leg.observed_host_key.clone().unwrap_or_default(),
                ..Default::default()
            });
        }
        let session = Arc::new(SshSession {
            registration,
            target: leg.handle,
            stop: CancellationToken::new(),
            bridges: Mutex::new(Vec::new()),
            client_channels: Mutex::new(Vec::new()),
            target_channels: Mutex::new(Vec::new()),
            exit_status: Arc::new(Mutex::new(None)),
            exit_signal: Arc::new(Mutex::new(None)),
            active_reported: std::sync::atomic::AtomicBool::new(false),
            settings: Mutex::new(Settings::of(&decision)),
            console: Arc::new(OnceLock::new()),
            closing: std::sync::atomic::AtomicBool::new(false),
        });
        self.shared.sessions.insert(id, session.clone());
        Ok(Some(session))
    }

    /// Joins a session already live here (the decision was an attach: its owner resuming, or
    /// the new owner after a handoff). The first session channel the client opens takes over
    /// the console.
    fn admit_attach(
        &mut self,
        id: SessionId,
        decision: &wg_proto::v1::SessionDecision,
    ) -> Result<Arc<SshSession>, String> {
        let session = self
            .shared
            .sessions
            .get(&id)
            .map(|s| s.clone())
            .ok_or_else(|| format!("session {id} is not running on this gateway"))?;
        if session.live().kill_token().is_cancelled() {
            return Err(format!("session {id} is ending"));
        }
        if session.live_console().is_none() {
            return Err(format!(
                "session {id} has no interactive terminal to attach to"
            ));
        }
        // From now on the (possibly new) owner's policy applies.
        if let Ok(mut s) = session.settings.lock() {
            *s = Settings::of(decision);
        }
        // Someone is at the terminal: the idle clock starts over.
        session.live().set_idle_warned(false);
        session.live().touch_input();
        self.attach_pending = true;
        Ok(session)
    }

    async fn fail_open(&self, id: SessionId, message: String) -> String {
        tracing::warn!(session = %id, error = %message, "cannot open the target leg");
        self.shared.journal.report(SessionReport {
            session_id: id.to_string(),
            state: "closed".into(),
            end_reason: EndReason::TargetError.as_str().into(),
            end_detail: message.clone(),
            ..Default::default()
        });
        message
    }
}

impl russh::server::Handler for ClientHandler {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let login = LoginName::parse(user).map_err(|e| e.to_string());
        let login_actor = login.as_ref().map(|l| l.actor.clone()).unwrap_or_default();
        let Ok(key_text) = key.public_key.to_openssh() else {
            return Ok(Auth::reject());
        };
        match self
            .shared
            .control
            .authenticate_actor(&login_actor, &key_text)
            .await
        {
            Ok(Some((actor, _groups))) => {
                self.actor = Some(actor);
                self.login = Some(login);
                Ok(Auth::Accept)
            }
            Ok(None) => Ok(Auth::reject()),
            Err(e) => {
                // Fail closed: no decision without the control plane. The key cannot be checked,
                // so the connection is let in only to be told why it is refused (a rejected key
                // would leave the client with a misleading "Permission denied").
                tracing::warn!(error = %e, "control plane unreachable during authentication");
                self.unreachable = Some(match &e {
                    // The control plane answered, but refuses this gateway (removed, or its
                    // certificate is not valid): the why is for the gateway's operator, in its
                    // log, not for the user.
                    crate::control::ControlCallError::Status(s)
                        if s.code() == tonic::Code::Unauthenticated =>
                    {
                        "this gateway is not accepted by the control plane; ask an administrator"
                            .to_owned()
                    }
                    _ => "control plane unreachable; try again later".to_owned(),
                });
                Ok(Auth::Accept)
            }
        }
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        self.ident = String::from_utf8_lossy(session.remote_sshid())
            .trim()
            .to_owned();
        if let Some(line) = self.unreachable.take() {
            self.refuse(&line);
            self.close_refused_later();
            return Ok(());
        }
        self.state = ConnState::Authenticated;
        // Decided now, unless the connection could join a live session (a resume, a
        // take-over): then at the first channel request, which tells whether it is a shell.
        if let Err(line) = self.decide(false, true).await {
            tracing::debug!(error = %line, "attempt refused");
            self.close_refused_later();
        }
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match &self.state {
            ConnState::Authenticating => {
                reply
                    .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                    .await;
            }
            ConnState::Authenticated if self.pending.is_none() => {
                reply.accept().await;
                self.pending = Some(Pending {
                    channel,
                    pty: None,
                    env: Vec::new(),
                });
            }
            ConnState::Authenticated => {
                // One channel at a time until the decision.
                reply
                    .reject(russh::ChannelOpenFailure::ResourceShortage)
                    .await;
            }
            ConnState::Refused(line) => {
                reply.accept().await;
                let line = format!("wardengate: {line}\r\n");
                let handle = session.handle();
                let kill = self.kill.clone();
                let status = self.refusal_status();
                tokio::spawn(async move {
                    let id = channel.id();
                    let _ = channel.extended_data_bytes(1, line.into_bytes()).await;
                    if let Some(status) = status {
                        let _ = handle.exit_status_request(id, status).await;
                    }
                    let _ = channel.eof().await;
                    let _ = channel.close().await;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    kill.cancel();
                });
            }
            ConnState::Ready(s)
                if self.kill.is_cancelled() || s.live().kill_token().is_cancelled() =>
            {
                // Ending (e.g. terminated while the target leg was being opened): nothing new is
                // bridged; the channel only carries the reason to the client.
                let line = s
                    .live()
                    .kill_info()
                    .map_or_else(|| "wardengate: session closed".to_owned(), notice_for);
                reply.accept().await;
                tokio::spawn(async move {
                    let _ = channel
                        .extended_data_bytes(1, format!("{line}\r\n").into_bytes())
                        .await;
                    let _ = channel.eof().await;
                    let _ = channel.close().await;
                });
            }
            ConnState::Ready(s) => {
                let s = s.clone();
                match s.target.channel_open_session().await {
                    Ok(target_channel) => {
                        reply.accept().await;
                        if let Ok(mut c) = s.client_channels.lock() {
                            c.push(channel.id());
                        }
                        self.attach(&s, channel, target_channel, session, None)
                            .await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "target refused a channel");
                        reply.reject(russh::ChannelOpenFailure::ConnectFailed).await;
                    }
                }
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let req = bridge::Request::Pty {
            term: term.to_owned(),
            cols: col_width,
            rows: row_height,
            pix_width,
            pix_height,
            modes: modes.to_vec(),
        };
        if let Some(p) = self.pending.as_mut().filter(|p| p.channel.id() == channel) {
            // Kept for the decision (an interactive shell?) and replayed to the target after it.
            p.pty = Some(req);
            return session.channel_success(channel);
        }
        self.forward(channel, req, session).await
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.request(channel, bridge::Request::Shell, session).await
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.request(channel, bridge::Request::Exec(data.to_vec()), session)
            .await
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.request(
            channel,
            bridge::Request::Subsystem(name.to_owned()),
            session,
        )
        .await
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        variable_value: &str,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(p) = self.pending.as_mut().filter(|p| p.channel.id() == channel) {
            p.env
                .push((variable_name.to_owned(), variable_value.to_owned()));
        } else if let Some(pair) = self.pairs.get(&channel) {
            pair.env(variable_name, variable_value).await;
        }
        Ok(())
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(pair) = self.pairs.get(&channel) {
            pair.window_change(col_width, row_height, pix_width, pix_height)
                .await;
        }
        Ok(())
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        signal: russh::Sig,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(pair) = self.pairs.get(&channel) {
            pair.signal(signal).await;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: russh::server::ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if matches!(self.state, ConnState::Authenticated) {
            // A forward before any session channel (`ssh -N -L`): decided now, not interactive.
            if let Err(line) = self.decide(false, false).await {
                self.close_refused_later();
                tracing::info!(error = %line, "forward refused: no session");
            }
        }
        let ConnState::Ready(s) = &self.state else {
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        if self.kill.is_cancelled() {
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        let s = s.clone();
        let id = s.live().id.to_string();
        let details = serde_json::json!({
            "direction": "local", "host": host_to_connect, "port": port_to_connect,
            "originator": format!("{originator_address}:{originator_port}"),
        });
        let allowed = s.settings().forward_local.iter().any(|rule| {
            wg_domain::resources::forward_rule_matches(rule, host_to_connect, port_to_connect)
        });
        if !allowed {
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            self.refuse_forward(details).await;
            return Ok(());
        }
        let opened = s
            .target
            .channel_open_direct_tcpip(
                host_to_connect,
                port_to_connect,
                originator_address,
                originator_port,
            )
            .await;
        let target_channel = match opened {
            Ok(c) => c,
            Err(e) => {
                tracing::info!(session = %id, error = %e, "the target refused a forward");
                reply.reject(russh::ChannelOpenFailure::ConnectFailed).await;
                return Ok(());
            }
        };
        reply.accept().await;
        let marker = format!("forward: {host_to_connect}:{port_to_connect}");
        self.attach(&s, channel, target_channel, session, Some(marker))
            .await;
        self.shared.journal.audit(
            &id,
            wg_domain::audit::kinds::SESSION_FORWARD_OPENED,
            &details,
        );
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        // Remote forwarding (`ssh -R`) is not offered: refuse it, on the record (of a session
        // decided now if there is none yet, as for any forward).
        if matches!(self.state, ConnState::Authenticated)
            && self.decide(false, false).await.is_err()
        {
            self.close_refused_later();
        }
        self.refuse_forward(serde_json::json!({
            "direction": "remote", "host": address, "port": *port,
        }))
        .await;
        Ok(false)
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        _channel: Channel<Msg>,
        socket_path: &str,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply
            .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        if matches!(self.state, ConnState::Authenticated)
            && self.decide(false, false).await.is_err()
        {
            self.close_refused_later();
        }
        self.refuse_forward(serde_json::json!({
            "direction": "local", "socket": socket_path,
        }))
        .await;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.pairs.remove(&channel);
        Ok(())
    }
}

impl ClientHandler {
    /// Bridges an accepted client channel to its target channel. A port forward (`forward`
    /// names it) is relayed without recording its bytes. The first bridged channel makes the
    /// session `active`.
    async fn attach(
        &mut self,
        s: &Arc<SshSession>,
        channel: Channel<Msg>,
        target_channel: russh::Channel<russh::client::Msg>,
        session: &mut Session,
        forward: Option<String>,
    ) {
        let ctx = self.bridge_ctx(s, session);
        let opaque = forward.is_some();
        if let Some(marker) = forward {
            ctx.marker(marker).await;
        }
        let client_id = channel.id();
        let (pair, tasks) = bridge::spawn(
            ctx,
            channel,
            target_channel,
            opaque,
            (self.released.clone(), self.conn),
        );
        // A forward carries no remote process to signal at the end.
        if !opaque && let Ok(mut t) = s.target_channels.lock() {
            t.push(pair.target());
        }
        self.pairs.insert(client_id, pair);
        if let Ok(mut b) = s.bridges.lock() {
            b.extend(tasks);
        }
        if !s
            .active_reported
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            self.shared.journal.report(SessionReport {
                session_id: s.live().id.to_string(),
                state: "active".into(),
                pty: s.live().pty().map(|(term, cols, rows)| wg_proto::v1::Pty {
                    term,
                    cols,
                    rows,
                }),
                ..Default::default()
            });
        }
    }

    /// What the relay tasks of a channel of this connection share.
    fn bridge_ctx(&self, s: &Arc<SshSession>, session: &mut Session) -> bridge::BridgeCtx {
        bridge::BridgeCtx {
            live: s.live().clone(),
            server: session.handle(),
            stop: s.stop.clone(),
            recordings: self.shared.recordings.clone(),
            exit_status: s.exit_status.clone(),
            exit_signal: s.exit_signal.clone(),
            console: s.console.clone(),
        }
    }

    /// Records a refused forward on the session, when there is one.
    async fn refuse_forward(&self, details: serde_json::Value) {
        let ConnState::Ready(s) = &self.state else {
            return;
        };
        let id = s.live().id.to_string();
        self.shared.journal.audit(
            &id,
            wg_domain::audit::kinds::SESSION_FORWARD_DENIED,
            &details,
        );
    }

    /// Decides the attempt (see [`ClientHandler::admit`]) and records the outcome on the
    /// connection: ready with a session, or refused with the line to show.
    /// `Ok(None)`: deferred (only with `may_defer`), the connection stays undecided.
    async fn decide(
        &mut self,
        interactive: bool,
        may_defer: bool,
    ) -> Result<Option<Arc<SshSession>>, String> {
        self.admission
            .admitting
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let admitted = self.admit(self.ident.clone(), interactive, may_defer).await;
        match &admitted {
            Ok(Some(s)) => {
                let _ = self.handoff_base.set(s.live().handoff_count());
                let _ = self.slot.set(s.clone());
                self.state = ConnState::Ready(s.clone());
            }
            Ok(None) => {
                self.admission
                    .admitting
                    .store(false, std::sync::atomic::Ordering::SeqCst);
                return admitted;
            }
            Err(line) => self.refuse(line),
        }
        self.admission.done.notify_one();
        admitted
    }

    /// The exit status a refused attempt's channel reports: 1 for a denial, none for a
    /// termination (the client then exits 255, as for any forced end).
    fn refusal_status(&self) -> Option<u32> {
        (!self.refusal_is_end).then_some(1)
    }

    /// Marks the connection refused with `line` (shown to the client at its first request).
    fn refuse(&mut self, line: &str) {
        let _ = self.refusal.set(line.to_owned());
        self.state = ConnState::Refused(line.to_owned());
    }

    /// Closes a refused connection after a moment, if the client does not leave first.
    fn close_refused_later(&self) {
        let kill = self.kill.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            kill.cancel();
        });
    }

    /// A shell, exec or subsystem request: the first one decides the attempt; later ones are
    /// forwarded.
    async fn request(
        &mut self,
        channel: ChannelId,
        req: bridge::Request,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        let Some(p) = self.pending.take_if(|p| p.channel.id() == channel) else {
            return self.forward(channel, req, session).await;
        };
        let interactive = matches!(req, bridge::Request::Shell) && p.pty.is_some();
        let s = match self.decide(interactive, false).await {
            Ok(Some(s)) => s,
            Ok(None) => return session.channel_failure(channel),
            Err(line) => {
                // The refusal goes on this channel: one line on stderr, exit status 1 (none
                // for a termination, see `refusal_is_end`).
                session.channel_success(channel)?;
                let handle = session.handle();
                let kill = self.kill.clone();
                let ch = p.channel;
                let status = self.refusal_status();
                tokio::spawn(async move {
                    let id = ch.id();
                    let _ = ch
                        .extended_data_bytes(1, format!("wardengate: {line}\r\n").into_bytes())
                        .await;
                    if let Some(status) = status {
                        let _ = handle.exit_status_request(id, status).await;
                    }
                    let _ = ch.eof().await;
                    let _ = ch.close().await;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    kill.cancel();
                });
                return Ok(());
            }
        };
        if self.kill.is_cancelled() || s.live().kill_token().is_cancelled() {
            // Ended while being set up (e.g. terminated while the target leg was opened):
            // nothing runs; the channel only carries the reason to the client.
            session.channel_success(channel)?;
            let line = s
                .live()
                .kill_info()
                .map_or_else(|| "wardengate: session closed".to_owned(), notice_for);
            let ch = p.channel;
            tokio::spawn(async move {
                let _ = ch
                    .extended_data_bytes(1, format!("{line}\r\n").into_bytes())
                    .await;
                let _ = ch.eof().await;
                let _ = ch.close().await;
            });
            return Ok(());
        }
        if self.attach_pending {
            self.attach_pending = false;
            let size = match &p.pty {
                Some(bridge::Request::Pty { cols, rows, .. }) => Some((*cols, *rows)),
                _ => None,
            };
            self.take_over_console(&s, p.channel, size, session).await;
            return session.channel_success(channel);
        }
        let target_channel = match s.target.channel_open_session().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "target refused a channel");
                return session.channel_failure(channel);
            }
        };
        if let Ok(mut c) = s.client_channels.lock() {
            c.push(channel);
        }
        // Known before the session goes active, so that the `active` report carries it.
        if let Some(bridge::Request::Pty {
            term, cols, rows, ..
        }) = &p.pty
        {
            s.live().set_pty(term, *cols, *rows);
        }
        self.attach(&s, p.channel, target_channel, session, None)
            .await;
        if let Some(pair) = self.pairs.get_mut(&channel) {
            if let Some(pty) = p.pty {
                // The client was told yes already; a target that refuses a terminal runs the
                // shell without one, as it would tell the client directly.
                let _ = pair.request(pty).await;
            }
            for (k, v) in &p.env {
                pair.env(k, v).await;
            }
        }
        self.forward(channel, req, session).await
    }

    /// Takes the session's console over with the client channel `channel` (a resume, or the new
    /// owner after a handoff), resized to the client's terminal.
    async fn take_over_console(
        &mut self,
        s: &Arc<SshSession>,
        channel: Channel<Msg>,
        size: Option<(u32, u32)>,
        session: &mut Session,
    ) {
        let Some(console) = s.live_console() else {
            return;
        };
        let owner = s.settings().owner;
        let notice = format!(
            "wardengate: {owner} attached to this session from another connection; this terminal is detached"
        );
        let ctx = self.bridge_ctx(s, session);
        ctx.marker(format!("attached: input from {owner} from now on"))
            .await;
        let id = channel.id();
        let (pair, task) = bridge::attach_console(
            ctx,
            &console,
            channel,
            (self.released.clone(), self.conn),
            &notice,
        )
        .await;
        if let Some((cols, rows)) = size {
            pair.window_change(cols, rows, 0, 0).await;
        }
        self.pairs.insert(id, pair);
        if let Ok(mut c) = s.client_channels.lock() {
            *c = vec![id];
        }
        if let Ok(mut b) = s.bridges.lock() {
            b.push(task);
        }
    }

    /// Forwards a request that needs an answer and answers the client before russh reads the
    /// next request. Channels of a refused attempt are answered by their refusal task.
    async fn forward(
        &mut self,
        channel: ChannelId,
        req: bridge::Request,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        let Some(pair) = self.pairs.get_mut(&channel) else {
            return Ok(());
        };
        let is_pty = matches!(req, bridge::Request::Pty { .. });
        if !pair.request(req).await {
            return session.channel_failure(channel);
        }
        if is_pty && let ConnState::Ready(s) = &self.state {
            // The terminal is part of the decision trail, and what a take-over checks: the
            // control plane learns it now rather than with the next progress report.
            let live = s.live().clone();
            let control = self.shared.control.clone();
            if let Some((term, cols, rows)) = live.pty() {
                let batch = wg_proto::v1::ProgressBatch {
                    sessions: vec![wg_proto::v1::SessionProgress {
                        session_id: live.id.to_string(),
                        pty: Some(wg_proto::v1::Pty { term, cols, rows }),
                        ..Default::default()
                    }],
                    ..Default::default()
                };
                if let Err(e) = control.progress(batch).await {
                    tracing::warn!(session = %live.id, error = %e, "cannot report the terminal");
                }
            }
        }
        session.channel_success(channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client leg offers ChaCha20-Poly1305 exactly when the CPU lacks AES instructions, and
    /// always offers AES-GCM (which every OpenSSH client since 6.2 speaks).
    #[test]
    fn client_leg_ciphers_follow_the_cpu() {
        let offered = client_leg_preferred().cipher.into_owned();
        assert!(offered.contains(&russh::cipher::AES_128_GCM));
        assert_eq!(
            offered.contains(&russh::cipher::CHACHA20_POLY1305),
            !aes_accelerated()
        );
        #[cfg(target_arch = "x86_64")]
        if let Ok(cpuinfo) = std::fs::read_to_string("/proc/cpuinfo") {
            let flags = cpuinfo
                .lines()
                .find(|l| l.starts_with("flags"))
                .unwrap_or_default();
            let has = |f: &str| flags.split_whitespace().any(|x| x == f);
            assert_eq!(aes_accelerated(), has("aes") && has("pclmulqdq"));
        }
        // The target leg (where our order decides) keeps every cipher, AES-GCM first.
        assert_eq!(preferred().cipher[0], russh::cipher::AES_128_GCM);
        assert!(
            preferred()
                .cipher
                .contains(&russh::cipher::CHACHA20_POLY1305)
        );
    }
}
