//! `wardengate dev`: the all-in-one mode.
//!
//! Layout of the data directory (created 0700):
//! - `wardengate.db` — the SQLite store;
//! - `master.key` — the vault master key (0600), unless `WARDENGATE_MASTER_KEY` is set;
//! - `admin.token` — the bootstrap admin's API token (0600), written once;
//! - `gateway_host_ed25519` — the gateway's SSH host key;
//! - `demo_host_ed25519`, `demo_client_ed25519` — the demo target's host key and the key the
//!   gateway injects for it (stored in the vault at `vault/ssh/demo`);
//! - `id_ed25519` — a key pair for `admin@local`, generated only when no key was given or found;
//! - `recordings/` — the recording store.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;
use wg_control::{ControlConfig, ControlPlane, vault::Vault};
use wg_store::Store;

use crate::keys;

/// The name of the in-process gateway.
const GATEWAY_NAME: &str = "gw-dev-1";

/// Arguments of `wardengate dev`.
#[derive(Debug, clap::Args)]
pub(crate) struct DevArgs {
    /// Data directory (created if missing); restarting with the same directory keeps all state.
    #[arg(long, default_value = ".wardengate-dev")]
    data_dir: PathBuf,
    /// SSH listener of the gateway.
    #[arg(long, default_value = "127.0.0.1:3022")]
    ssh_addr: SocketAddr,
    /// REST API listener.
    #[arg(long, default_value = "127.0.0.1:8080")]
    api_addr: SocketAddr,
    /// gRPC listener of the control plane for gateways (loopback; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    grpc_addr: SocketAddr,
    /// Public key to register for admin@local (default: ~/.ssh/*.pub, or a generated pair).
    #[arg(long)]
    ssh_key: Option<PathBuf>,
    /// gateway.maxActive: live sessions the gateway admits at once (0 = unlimited).
    #[arg(long, default_value_t = 500)]
    max_active: u32,
}

/// Runs until Ctrl-C / SIGTERM.
/// Takes the exclusive lock of a data directory (`DIR/wardengate.lock`, held until the returned
/// file is dropped), so that two processes never run on one directory.
///
/// # Errors
/// Another process holds it, or the lock file cannot be opened.
pub(crate) fn lock_data_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    let lock_path = dir.join("wardengate.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "another wardengate is already running on {} (lock {})",
            dir.display(),
            lock_path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", lock_path.display()))
        }
    }
}

pub(crate) async fn run(args: DevArgs) -> anyhow::Result<()> {
    let dir = &args.data_dir;
    create_private_dir(dir)?;
    // One process per data directory: a second one would close the first one's live sessions
    // as lost and fight over its recordings.
    let _lock = lock_data_dir(dir)?;
    let store_url = format!("sqlite://{}", dir.join("wardengate.db").display());
    let store = Store::connect(&store_url)
        .await
        .with_context(|| format!("opening the store {store_url}"))?;
    let vault = Vault::open(&dir.join("master.key")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let recordings = dir.join("recordings");
    std::fs::create_dir_all(&recordings).context("creating the recording store")?;
    let control = ControlPlane::new(store, vault, ControlConfig::new(&recordings));
    let shutdown = CancellationToken::new();
    // Handoff offers nobody accepts are recorded as expired close to their deadline.
    let sweeper = control.spawn_handoff_sweeper(shutdown.clone());

    // Bootstrap admin.
    let admin_keys = admin_keys(dir, args.ssh_key.as_deref())?;
    let token_path = dir.join("admin.token");
    let new_token = control
        .bootstrap_admin(admin_keys.clone())
        .await
        .map_err(|e| anyhow::anyhow!("bootstrap: {e}"))?;
    if let Some(token) = &new_token {
        wg_control::vault::write_private_file(&token_path, format!("{token}\n").as_bytes())
            .with_context(|| format!("writing {}", token_path.display()))?;
    }

    // Control plane: gRPC for gateways, REST for operators.
    let gateway_token = wg_domain::ids::random_hex(24)?;
    let served = serve_control(
        control.clone(),
        args.grpc_addr,
        args.api_addr,
        Some(gateway_token.clone()),
        None,
        wg_control::DEFAULT_LEASE,
        shutdown.clone(),
    )
    .await?;
    let (grpc_addr, api_addr) = (served.grpc_addr, served.api_addr);

    // Demo target and its resources.
    let demo_addr = start_demo(dir, &control, shutdown.clone()).await?;

    // Sessions the previous run left open cannot have survived it: seal and close them.
    let orphans = control
        .reconcile_gateway_restart(GATEWAY_NAME)
        .await
        .map_err(|e| anyhow::anyhow!("closing sessions of the previous run: {e}"))?;
    if orphans > 0 {
        tracing::warn!(
            sessions = orphans,
            "closed sessions left open by the previous run (gateway_lost, recordings sealed as partial)"
        );
    }

    // Gateway, over the same protocol a standalone gateway uses.
    let gateway_key =
        keys::load_or_create(&dir.join("gateway_host_ed25519"), "wardengate-gateway")?;
    let fingerprint = gateway_key
        .public_key()
        .fingerprint(russh::keys::HashAlg::Sha256)
        .to_string();
    let gateway = wg_gateway::start(
        wg_gateway::GatewayConfig {
            name: GATEWAY_NAME.into(),
            ssh_addr: args.ssh_addr,
            advertise_address: None,
            recordings_root: recordings.clone(),
            control_urls: vec![format!("http://{grpc_addr}")],
            control_auth: wg_gateway::ControlAuth::Bearer(gateway_token),
            progress_interval: Duration::from_secs(1),
            max_active: (args.max_active > 0).then_some(args.max_active),
            heartbeat_interval: None,
            journal_dir: dir.join("gateway-events"),
            journal_max_bytes: wg_gateway::journal::DEFAULT_MAX_BYTES,
        },
        gateway_key,
    )
    .await?;
    let ssh_addr = gateway.ssh_addr;

    print_welcome(
        dir,
        ssh_addr,
        api_addr,
        demo_addr,
        &fingerprint,
        new_token.as_deref(),
    );

    wait_for_signal().await;
    eprintln!("wardengate: shutting down");
    gateway.shutdown().await;
    shutdown.cancel();
    served.join().await;
    let _ = sweeper.await;
    Ok(())
}

/// The control plane's listeners, serving until their shutdown token is cancelled.
pub(crate) struct Served {
    /// The bound gateway gRPC address.
    pub(crate) grpc_addr: SocketAddr,
    /// The bound REST API address.
    pub(crate) api_addr: SocketAddr,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl Served {
    /// Waits for both servers to stop.
    pub(crate) async fn join(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Binds and serves the gateway gRPC service and the REST API of `control` (the same for `dev`
/// and `control`); `dev_token` admits the in-process dev gateway (plaintext loopback); `tls`
/// serves the gRPC listener over TLS and admits joined gateways by their client certificates.
pub(crate) async fn serve_control(
    control: ControlPlane,
    grpc_addr: SocketAddr,
    api_addr: SocketAddr,
    dev_token: Option<String>,
    tls: Option<wg_control::tls::ServerTls>,
    lease: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<Served> {
    let grpc_listener = tokio::net::TcpListener::bind(grpc_addr)
        .await
        .with_context(|| format!("binding the gateway gRPC listener {grpc_addr}"))?;
    let grpc_addr = grpc_listener.local_addr()?;
    let mut grpc = wg_control::grpc::GatewayService::new(control.clone(), dev_token, lease);
    if tls.is_some() {
        let ca = control
            .cluster_ca()
            .await
            .map_err(|e| anyhow::anyhow!("loading the control plane's CA: {e}"))?;
        grpc = grpc.with_client_certificates(ca);
    }
    let grpc_shutdown = shutdown.clone();
    let grpc_task = tokio::spawn(async move {
        let server = tonic::transport::Server::builder().add_service(grpc.into_server());
        let served = match tls {
            Some(tls) => {
                let incoming = tls.incoming(grpc_listener, grpc_shutdown.clone());
                server
                    .serve_with_incoming_shutdown(incoming, grpc_shutdown.cancelled_owned())
                    .await
            }
            None => {
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc_listener);
                server
                    .serve_with_incoming_shutdown(incoming, grpc_shutdown.cancelled_owned())
                    .await
            }
        };
        if let Err(e) = served {
            tracing::error!(error = %e, "gateway gRPC server failed");
        }
    });
    let api_listener = tokio::net::TcpListener::bind(api_addr)
        .await
        .with_context(|| format!("binding the API listener {api_addr}"))?;
    let api_addr = api_listener.local_addr()?;
    let router = wg_control::api::router(control);
    let api_task = tokio::spawn(async move {
        if let Err(e) = axum::serve(api_listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "API server failed");
        }
    });
    Ok(Served {
        grpc_addr,
        api_addr,
        tasks: [grpc_task, api_task],
    })
}

pub(crate) fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.exists() {
        if !dir.is_dir() {
            bail!("{} exists and is not a directory", dir.display());
        }
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// The keys to register for admin@local: `--ssh-key`, else `~/.ssh/*.pub`, else a generated pair.
fn admin_keys(dir: &Path, given: Option<&Path>) -> anyhow::Result<Vec<String>> {
    if let Some(p) = given {
        return Ok(vec![keys::read_public_key(p)?]);
    }
    let found = keys::user_public_keys();
    if !found.is_empty() {
        return Ok(found);
    }
    let path = dir.join("id_ed25519");
    let key = keys::load_or_create(&path, "admin@local")?;
    Ok(vec![key.public_key().to_openssh()?])
}

fn os_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            std::process::Command::new("id")
                .arg("-un")
                .output()
                .ok()
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "root".into())
}

/// Starts the demo target on a loopback port and (re)applies its target, policy and credential.
async fn start_demo(
    dir: &Path,
    control: &ControlPlane,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let host_key = keys::load_or_create(&dir.join("demo_host_ed25519"), "wardengate-demo-target")?;
    let client_key =
        keys::load_or_create(&dir.join("demo_client_ed25519"), "wardengate-demo-account")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the demo target")?;
    let addr = listener.local_addr()?;
    let account = os_user();
    let host_pub = host_key.public_key().to_openssh()?;
    let config = crate::demo::DemoConfig {
        host_key,
        authorized_key: client_key.public_key().clone(),
        account: account.clone(),
        shell: std::env::var_os("SHELL")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .unwrap_or_else(|| PathBuf::from("/bin/sh")),
    };
    tokio::spawn(async move {
        if let Err(e) = crate::demo::serve(listener, config, shutdown).await {
            tracing::error!(error = %e, "demo target failed");
        }
    });
    let yaml = format!(
        r#"kind: target
name: demo
address: "{addr}"
protocol: ssh
tags: {{env: demo}}
accounts:
  - name: "{account}"
    credential: vault/ssh/demo
hostKey: "{host_pub}"
---
kind: policy
name: demo-admin
subjects: [user:admin@local]
targets: {{names: [demo]}}
protocols: [ssh]
recording: full
"#
    );
    control
        .apply(&yaml, "system:dev")
        .await
        .map_err(|e| anyhow::anyhow!("applying the demo resources: {e}"))?;
    let have_secret = control
        .vault_list()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .iter()
        .any(|e| e.path == "vault/ssh/demo");
    if !have_secret {
        let pem = client_key.to_openssh(russh::keys::ssh_key::LineEnding::LF)?;
        control
            .vault_put("vault/ssh/demo", "private_key", pem.as_str(), "system:dev")
            .await
            .map_err(|e| anyhow::anyhow!("storing the demo credential: {e}"))?;
    }
    Ok(addr)
}

fn print_welcome(
    dir: &Path,
    ssh: SocketAddr,
    api: SocketAddr,
    demo: SocketAddr,
    fingerprint: &str,
    new_token: Option<&str>,
) {
    let token_file = dir.join("admin.token");
    let mut out = String::new();
    out.push_str("\nWardengate dev is running.\n\n");
    out.push_str(&format!(
        "  gateway   ssh {ssh}  (host key {fingerprint})\n"
    ));
    out.push_str(&format!(
        "  API       http://{api}/api/v1  (OpenAPI: /api/v1/openapi.json)\n"
    ));
    out.push_str(&format!(
        "  demo      target \"demo\" at {demo} (your shell, loopback only)\n"
    ));
    out.push_str(&format!("  data      {}\n", dir.display()));
    if let Some(token) = new_token {
        out.push_str(&format!(
            "\nAdmin API token for admin@local (shown once; saved to {}):\n  {token}\n",
            token_file.display()
        ));
    }
    let port = ssh.port();
    let host = ssh.ip();
    out.push_str("\nTry next:\n");
    let id_file = dir.join("id_ed25519");
    let identity = if id_file.exists() {
        format!(" -i {}", id_file.display())
    } else {
        String::new()
    };
    out.push_str(&format!(
        "  ssh -p {port}{identity} admin@local:demo@{host}\n"
    ));
    out.push_str(&format!(
        "  export WGCTL_ADDR=http://{api} WGCTL_TOKEN=$(cat {})\n",
        token_file.display()
    ));
    out.push_str("  wgctl session list\n");
    out.push_str("  wgctl session show <SESSION>\n");
    out.push_str("  wgctl session terminate <SESSION> --reason \"trying it out\"\n");
    out.push_str("  wgctl recording verify <SESSION>\n");
    out.push_str("  wgctl audit verify\n\n");
    print!("{out}");
}

pub(crate) async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
