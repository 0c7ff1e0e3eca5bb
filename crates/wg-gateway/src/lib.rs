//! The Wardengate gateway: protocol listeners and the live session runtime.
//!
//! A gateway accepts client connections ([`ssh`] for now; one module per protocol), asks the
//! control plane for a decision through [`control::ControlClient`] (the `wardengate.v1` gRPC
//! protocol — the gateway holds no database credentials), opens the target leg with the injected
//! account, relays and records the traffic, and reports every lifecycle step. Live sessions are
//! owned by the [`runtime::Runtime`]; operator commands (terminate) arrive over the gateway's
//! command stream and reach the owning session through its [`runtime::LiveSession`] handle.

pub mod control;
pub mod journal;
pub mod runtime;
pub mod ssh;
pub mod tls;
mod workers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use control::{ControlClient, Joined};
pub use runtime::Runtime;
pub use tls::{ControlAuth, TlsIdentity};

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Gateway name, e.g. `gw-dev-1`.
    pub name: String,
    /// Where the SSH listener binds.
    pub ssh_addr: SocketAddr,
    /// The address clients are told to use (defaults to the bound address).
    pub advertise_address: Option<String>,
    /// Where recordings are spooled (`ROOT/<session>/…`).
    pub recordings_root: std::path::PathBuf,
    /// Control-plane gRPC endpoints (one per replica): `https://cp1:8443` with mutual TLS, or
    /// `http://127.0.0.1:8081` for the `dev` gateway's bearer token.
    pub control_urls: Vec<String>,
    /// How the gateway authenticates to the control plane.
    pub control_auth: ControlAuth,
    /// How often live-session progress (last input, recording size) is reported.
    pub progress_interval: Duration,
    /// `gateway.maxActive`: live sessions this gateway admits at once (default 500; `None`:
    /// unlimited). Counted by the control plane with the other concurrency scopes.
    pub max_active: Option<u32>,
    /// Where the event journal lives (lifecycle reports and gateway-decided audit events wait
    /// there until the control plane acknowledges them; see [`journal`]).
    pub journal_dir: std::path::PathBuf,
    /// Bound on unacknowledged journaled events, in bytes: beyond it new connections are
    /// refused ([`journal::DEFAULT_MAX_BYTES`] by default).
    pub journal_max_bytes: u64,
    /// How often the lease is renewed (standalone gateways; `None` for the in-process `dev`
    /// gateway, which has no lease).
    pub heartbeat_interval: Option<Duration>,
}

/// A running gateway.
#[derive(Debug)]
pub struct GatewayHandle {
    /// The bound SSH address.
    pub ssh_addr: SocketAddr,
    /// The live-session runtime.
    pub runtime: Arc<Runtime>,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    journal_stop: CancellationToken,
    journal_sender: tokio::task::JoinHandle<()>,
}

impl GatewayHandle {
    /// Stops accepting, ends the command stream and waits for the gateway's tasks. Live sessions
    /// are closed with their recordings sealed; their last events are delivered (for up to 3 s;
    /// what is left stays in the journal for the next start).
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.runtime.close_all("gateway shutting down").await;
        for t in self.tasks {
            let _ = t.await;
        }
        self.journal_stop.cancel();
        let _ = self.journal_sender.await;
    }
}

/// Errors starting a gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The listener could not bind.
    #[error("cannot listen on {addr}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The control plane cannot be reached.
    #[error("control plane unreachable at {url}: {message}")]
    Control {
        /// URL.
        url: String,
        /// Cause.
        message: String,
    },
    /// The host key could not be loaded.
    #[error("host key: {0}")]
    HostKey(String),
    /// The event journal could not be opened.
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
}

/// Starts a gateway: opens the event journal (replaying what a previous process left), binds the
/// SSH listener, connects to the control plane and opens the command stream.
///
/// # Errors
/// [`GatewayError`] when binding or connecting fails.
pub async fn start(
    config: GatewayConfig,
    host_key: russh::keys::PrivateKey,
) -> Result<GatewayHandle, GatewayError> {
    let journal = Arc::new(journal::Journal::open(
        &config.journal_dir,
        config.journal_max_bytes,
    )?);
    let control =
        ControlClient::connect_any(&config.control_urls, &config.control_auth, &config.name)
            .await
            .map_err(|e| GatewayError::Control {
                url: config.control_urls.join(","),
                message: e.to_string(),
            })?;
    let listener = tokio::net::TcpListener::bind(config.ssh_addr)
        .await
        .map_err(|source| GatewayError::Bind {
            addr: config.ssh_addr,
            source,
        })?;
    let ssh_addr = listener.local_addr().map_err(|source| GatewayError::Bind {
        addr: config.ssh_addr,
        source,
    })?;
    let advertise = config
        .advertise_address
        .clone()
        .unwrap_or_else(|| ssh_addr.to_string());
    let runtime = Arc::new(Runtime::new(control.clone()));
    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();
    // Delivered before the command stream opens: a restart notice then finds the previous
    // process's last reports applied.
    let journal_stop = CancellationToken::new();
    let journal_sender = tokio::spawn(journal::run_sender(
        journal.clone(),
        control.clone(),
        runtime.clone(),
        journal_stop.clone(),
        Duration::from_secs(3),
    ));
    // One command stream per replica (see `control::run_command_stream`).
    let first_stream = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut per_replica = Vec::new();
    for url in &config.control_urls {
        let stream_client = if config.control_urls.len() == 1 {
            control.clone()
        } else {
            ControlClient::lazy(url, &config.control_auth, &config.name).map_err(|e| {
                GatewayError::Control {
                    url: url.clone(),
                    message: e.to_string(),
                }
            })?
        };
        per_replica.push(stream_client.clone());
        tasks.push(tokio::spawn(control::run_command_stream(
            stream_client,
            runtime.clone(),
            advertise.clone(),
            first_stream.clone(),
            shutdown.clone(),
        )));
    }
    if let Some(interval) = config.heartbeat_interval {
        tasks.push(tokio::spawn(control::run_heartbeat(
            per_replica,
            runtime.clone(),
            interval,
            advertise.clone(),
            shutdown.clone(),
        )));
    }
    tasks.push(tokio::spawn(runtime::run_progress_reporter(
        runtime.clone(),
        config.progress_interval,
        shutdown.clone(),
    )));
    let ssh = ssh::SshListener::new(
        ssh::SshSettings {
            gateway: config.name.clone(),
            recordings_root: config.recordings_root.clone(),
            max_active: config.max_active,
        },
        host_key,
        control,
        journal,
        runtime.clone(),
    );
    tasks.push(tokio::spawn(ssh.serve(listener, shutdown.clone())));
    Ok(GatewayHandle {
        ssh_addr,
        runtime,
        shutdown,
        tasks,
        journal_stop,
        journal_sender,
    })
}
