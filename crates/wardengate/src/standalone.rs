//! `wardengate control --config FILE` and `wardengate gateway --config FILE`: the processes of a
//! cluster (issue #3). Example files: `examples/control.yaml`, `examples/gateway.yaml`.
//!
//! A control-plane replica serves the REST API and the gateway gRPC service over a shared store
//! (PostgreSQL for several replicas; SQLite for one), sweeps gateway leases and expires handoff
//! offers. A gateway joins once with a one-time join token (`wgctl gateway token create`),
//! keeps the name and credential it was given in its data directory (`identity.json`, 0600),
//! renews its lease with heartbeats and serves SSH.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use wg_control::{ControlConfig, ControlPlane, vault::Vault};
use wg_store::Store;

use crate::keys;

/// Arguments of `wardengate control` and `wardengate gateway`.
#[derive(Debug, clap::Args)]
pub(crate) struct ConfigArgs {
    /// The YAML configuration file.
    #[arg(long)]
    config: PathBuf,
}

/// `wardengate control` configuration (YAML, camelCase keys; unknown keys are refused).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ControlFile {
    /// `postgres://…` (several replicas) or `sqlite://PATH` (one).
    store: String,
    /// Master key (`master.key`, unless `WARDENGATE_MASTER_KEY` is set; every replica needs the
    /// same key) and the bootstrap admin token (`admin.token`).
    data_dir: PathBuf,
    /// The recording store, shared with the gateways (they spool into it).
    recordings_dir: PathBuf,
    /// REST API listener.
    #[serde(default = "default_api_addr")]
    api_addr: SocketAddr,
    /// Gateway gRPC listener.
    #[serde(default = "default_grpc_addr")]
    grpc_addr: SocketAddr,
    /// A gateway silent this long is declared lost (default 15s).
    #[serde(default, with = "opt_duration")]
    gateway_lease: Option<Duration>,
    /// Public keys (OpenSSH lines) registered for the bootstrap admin on first start.
    #[serde(default)]
    admin_ssh_keys: Vec<String>,
}

fn default_api_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_grpc_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}

/// `wardengate gateway` configuration (YAML, camelCase keys; unknown keys are refused).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GatewayFile {
    /// The control-plane replicas' gRPC URLs, e.g. `[http://cp1:8443, http://cp2:8443]`.
    control_urls: Vec<String>,
    /// Identity (`identity.json`), the SSH host key (`host_ed25519`) and the event journal
    /// (`events/`).
    data_dir: PathBuf,
    /// The recording store shared with the control plane.
    recordings_dir: PathBuf,
    /// The one-time join token, needed on the first start only.
    #[serde(default)]
    join_token: Option<String>,
    /// SSH listener.
    #[serde(default = "default_ssh_addr")]
    ssh_addr: SocketAddr,
    /// The address clients are told to use (default: the bound one).
    #[serde(default)]
    advertise_address: Option<String>,
    /// `gateway.maxActive` (default 500; 0 = unlimited).
    #[serde(default = "default_max_active")]
    max_active: u32,
    /// Lease renewal interval (default 3s; keep it well under the control plane's lease).
    #[serde(default, with = "opt_duration")]
    heartbeat_interval: Option<Duration>,
    /// Bound on events waiting for the control plane, in bytes (default 64 MiB); beyond it new
    /// connections are refused while live sessions go on.
    #[serde(default = "default_journal_max_bytes")]
    event_journal_max_bytes: u64,
}

fn default_journal_max_bytes() -> u64 {
    wg_gateway::journal::DEFAULT_MAX_BYTES
}

fn default_ssh_addr() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 2222))
}

fn default_max_active() -> u32 {
    500
}

/// Durations written like `15s`, `1m30s`.
mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

fn read_config<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the configuration {}", path.display()))?;
    serde_yaml_ng::from_str(&text).with_context(|| format!("in {}", path.display()))
}

/// What a gateway keeps after joining.
#[derive(Debug, serde::Serialize, Deserialize)]
struct Identity {
    name: String,
    pool: String,
    credential: String,
}

/// Runs a control-plane replica until SIGINT/SIGTERM.
pub(crate) async fn run_control(args: ConfigArgs) -> anyhow::Result<()> {
    let cfg: ControlFile = read_config(&args.config)?;
    crate::dev::create_private_dir(&cfg.data_dir)?;
    std::fs::create_dir_all(&cfg.recordings_dir).context("creating the recording store")?;
    let store = Store::connect(&cfg.store)
        .await
        .with_context(|| format!("opening the store {}", cfg.store))?;
    let vault =
        Vault::open(&cfg.data_dir.join("master.key")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let control = ControlPlane::new(store, vault, ControlConfig::new(&cfg.recordings_dir));
    let token_path = cfg.data_dir.join("admin.token");
    if let Some(token) = control
        .bootstrap_admin(cfg.admin_ssh_keys.clone())
        .await
        .map_err(|e| anyhow::anyhow!("bootstrap: {e}"))?
    {
        wg_control::vault::write_private_file(&token_path, format!("{token}\n").as_bytes())
            .with_context(|| format!("writing {}", token_path.display()))?;
        eprintln!(
            "wardengate: admin API token for admin@local (shown once; saved to {}):\n  {token}",
            token_path.display()
        );
    }
    let shutdown = CancellationToken::new();
    let lease = cfg.gateway_lease.unwrap_or(wg_control::DEFAULT_LEASE);
    let served = crate::dev::serve_control(
        control.clone(),
        cfg.grpc_addr,
        cfg.api_addr,
        None,
        lease,
        shutdown.clone(),
    )
    .await?;
    let sweeper = control.spawn_lease_sweeper(lease, shutdown.clone());
    eprintln!(
        "wardengate control: API http://{}/api/v1, gateways grpc {} (lease {})",
        served.api_addr,
        served.grpc_addr,
        wg_domain::time::format_duration(lease)
    );
    crate::dev::wait_for_signal().await;
    eprintln!("wardengate control: shutting down");
    shutdown.cancel();
    served.join().await;
    let _ = sweeper.await;
    Ok(())
}

/// Runs a gateway until SIGINT/SIGTERM; joins first if it has no identity yet.
pub(crate) async fn run_gateway(args: ConfigArgs) -> anyhow::Result<()> {
    let cfg: GatewayFile = read_config(&args.config)?;
    if cfg.control_urls.is_empty() {
        bail!("controlUrls must name at least one control plane");
    }
    crate::dev::create_private_dir(&cfg.data_dir)?;
    std::fs::create_dir_all(&cfg.recordings_dir).context("creating the recording spool")?;
    let identity_path = cfg.data_dir.join("identity.json");
    let identity: Identity = if identity_path.exists() {
        serde_json::from_str(
            &std::fs::read_to_string(&identity_path)
                .with_context(|| format!("reading {}", identity_path.display()))?,
        )
        .with_context(|| format!("in {}", identity_path.display()))?
    } else {
        let Some(token) = cfg.join_token.as_deref().filter(|t| !t.trim().is_empty()) else {
            bail!(
                "this gateway has not joined yet: set joinToken (from `wgctl gateway token create --pool POOL`)"
            );
        };
        let advertise = cfg
            .advertise_address
            .clone()
            .unwrap_or_else(|| cfg.ssh_addr.to_string());
        let (name, pool, credential) =
            wg_gateway::ControlClient::join(&cfg.control_urls, token.trim(), &advertise)
                .await
                .map_err(|e| anyhow::anyhow!("joining the cluster: {e}"))?;
        let identity = Identity {
            name,
            pool,
            credential,
        };
        wg_control::vault::write_private_file(
            &identity_path,
            serde_json::to_string_pretty(&identity)?.as_bytes(),
        )
        .with_context(|| format!("writing {}", identity_path.display()))?;
        eprintln!(
            "wardengate gateway: joined as {} (pool {})",
            identity.name, identity.pool
        );
        identity
    };
    let host_key = keys::load_or_create(&cfg.data_dir.join("host_ed25519"), &identity.name)?;
    let gateway = wg_gateway::start(
        wg_gateway::GatewayConfig {
            name: identity.name.clone(),
            ssh_addr: cfg.ssh_addr,
            advertise_address: cfg.advertise_address.clone(),
            recordings_root: cfg.recordings_dir.clone(),
            control_urls: cfg.control_urls.clone(),
            control_token: identity.credential.clone(),
            progress_interval: Duration::from_secs(1),
            max_active: (cfg.max_active > 0).then_some(cfg.max_active),
            heartbeat_interval: Some(cfg.heartbeat_interval.unwrap_or(Duration::from_secs(3))),
            journal_dir: cfg.data_dir.join("events"),
            journal_max_bytes: cfg.event_journal_max_bytes,
        },
        host_key,
    )
    .await?;
    eprintln!(
        "wardengate gateway {}: ssh {}",
        identity.name, gateway.ssh_addr
    );
    crate::dev::wait_for_signal().await;
    eprintln!("wardengate gateway: shutting down");
    gateway.shutdown().await;
    Ok(())
}
