//! The built-in demo target of `wardengate dev`.
//!
//! An in-process SSH server (dev mode only, loopback only) that runs the
//! invoking user's shell in a real PTY, so a newcomer can broker a real
//! session in one command. The gateway connects to it as an SSH client with an
//! injected key, exactly as it would to a real sshd, and the demo target
//! mimics sshd where a client can tell the difference: the order of the
//! closing messages (all output, EOF, `exit-status`/`exit-signal`, CLOSE),
//! login shells, `$SHELL -c` for exec, stdout/stderr separation without a PTY,
//! the sftp subsystem, signals delivered to the child's process group.
//!
//! There is no privilege switching: every child runs as the user running
//! `wardengate dev`, in their home directory.

mod channel;
mod handler;
mod process;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use russh::keys::{PrivateKey, PublicKey};
use russh::{MethodKind, MethodSet, SshId};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long `serve` waits, once shut down, for sessions to end and their
/// children to be reaped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Bound on the SSH handshake up to authentication being attempted.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed `accept` (e.g. EMFILE) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// `PATH` for children when the invoking process has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Configuration of the demo target.
pub(crate) struct DemoConfig {
    /// The host key the demo target presents (the gateway pins its public half).
    pub(crate) host_key: PrivateKey,
    /// The only public key accepted for authentication (the gateway's injected key).
    pub(crate) authorized_key: PublicKey,
    /// The only login name accepted, e.g. the invoking OS user's name.
    pub(crate) account: String,
    /// The shell run for `shell` and `exec` requests (`$SHELL` or `/bin/sh`).
    pub(crate) shell: PathBuf,
}

impl std::fmt::Debug for DemoConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoConfig")
            .field("host_key", &"***")
            .field(
                "authorized_key",
                &self.authorized_key.fingerprint(Default::default()),
            )
            .field("account", &self.account)
            .field("shell", &self.shell)
            .finish()
    }
}

/// Everything the connection handlers share.
struct Shared {
    authorized_key: PublicKey,
    account: String,
    shell: PathBuf,
    home: PathBuf,
    path: OsString,
}

impl Shared {
    fn new(config: &DemoConfig) -> Self {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .filter(|home| home.is_absolute() && home.is_dir())
            .unwrap_or_else(|| PathBuf::from("/"));
        let path = std::env::var_os("PATH")
            .filter(|path| !path.is_empty())
            .unwrap_or_else(|| OsString::from(DEFAULT_PATH));
        Self {
            authorized_key: config.authorized_key.clone(),
            account: config.account.clone(),
            shell: config.shell.clone(),
            home,
            path,
        }
    }
}

/// Refuses any address that is not loopback: the demo target runs arbitrary
/// shells for whoever holds the injected key, so it must never be reachable
/// from another host.
pub(crate) fn ensure_loopback(addr: SocketAddr) -> anyhow::Result<()> {
    if addr.ip().to_canonical().is_loopback() {
        Ok(())
    } else {
        bail!("the demo target only listens on loopback addresses, refusing {addr}")
    }
}

/// Serves the demo target on `listener` until `shutdown` is cancelled.
///
/// Fails immediately if the listener is not bound to a loopback address. On
/// shutdown, open sessions are disconnected and their children are sent
/// SIGHUP, then SIGKILL; `serve` waits a few seconds for that to finish.
pub(crate) async fn serve(
    listener: TcpListener,
    config: DemoConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let local = listener
        .local_addr()
        .context("demo target: reading the listener's address")?;
    ensure_loopback(local)?;
    let shared = Arc::new(Shared::new(&config));
    let russh_config = Arc::new(server_config(config.host_key));
    // Every connection and channel task holds a clone of `alive`; once they
    // have all finished, `alive_rx.recv()` returns `None`.
    let (alive, mut alive_rx) = mpsc::channel::<()>(1);
    tracing::info!(%local, account = %shared.account, shell = %shared.shell.display(), "demo target listening");
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if ensure_loopback(peer).is_err() {
                        tracing::warn!(%peer, "demo target: dropping a non-loopback peer");
                        continue;
                    }
                    let conn = Connection {
                        peer,
                        local,
                        russh_config: russh_config.clone(),
                        shared: shared.clone(),
                        cancel: shutdown.child_token(),
                        alive: alive.clone(),
                    };
                    tokio::spawn(conn.run(stream));
                }
                Err(error) => {
                    tracing::warn!(%error, "demo target: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    drop(listener);
    drop(alive);
    if tokio::time::timeout(SHUTDOWN_GRACE, alive_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!("demo target: sessions still winding down at shutdown");
    }
    tracing::info!(%local, "demo target stopped");
    Ok(())
}

fn server_config(host_key: PrivateKey) -> russh::server::Config {
    let mut methods = MethodSet::empty();
    methods.push(MethodKind::PublicKey);
    russh::server::Config {
        server_id: SshId::Standard(Cow::Borrowed("SSH-2.0-wardengate_demo")),
        methods,
        auth_rejection_time: Duration::from_millis(500),
        // OpenSSH opens with a "none" probe; answering it at once is harmless.
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![host_key],
        // Like sshd: an idle interactive shell is never cut off; dead peers
        // are detected with keepalives instead.
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        nodelay: true,
        ..Default::default()
    }
}

/// One accepted TCP connection.
struct Connection {
    peer: SocketAddr,
    local: SocketAddr,
    russh_config: Arc<russh::server::Config>,
    shared: Arc<Shared>,
    /// Cancelled on shutdown and when the connection ends; channel tasks
    /// then terminate their children.
    cancel: CancellationToken,
    alive: mpsc::Sender<()>,
}

impl Connection {
    async fn run(self, stream: TcpStream) {
        let Connection {
            peer,
            local,
            russh_config,
            shared,
            cancel,
            alive,
        } = self;
        let handler = handler::ConnHandler::new(shared, peer, local, cancel.clone(), alive.clone());
        let started = tokio::select! {
            () = cancel.cancelled() => None,
            started = tokio::time::timeout(
                HANDSHAKE_TIMEOUT,
                russh::server::run_stream(russh_config, stream, handler),
            ) => match started {
                Ok(Ok(session)) => Some(session),
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "demo target: SSH handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!(%peer, "demo target: SSH handshake timed out");
                    None
                }
            },
        };
        if let Some(mut session) = started {
            let handle = session.handle();
            tokio::select! {
                ended = &mut session => {
                    if let Err(error) = ended {
                        tracing::debug!(%peer, %error, "demo target: connection ended with an error");
                    }
                }
                () = cancel.cancelled() => {
                    let _ = handle
                        .disconnect(
                            russh::Disconnect::ByApplication,
                            "demo target shutting down".into(),
                            String::new(),
                        )
                        .await;
                    let _ = tokio::time::timeout(Duration::from_secs(2), &mut session).await;
                }
            }
        }
        cancel.cancel();
        drop(alive);
    }
}
