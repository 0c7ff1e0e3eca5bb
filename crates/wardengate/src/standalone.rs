//! `wardengate control --config FILE` and `wardengate gateway --config FILE`: the processes of a
//! cluster (issue #3). Example files: `examples/control.yaml`, `examples/gateway.yaml`.
//!
//! A control-plane replica serves the REST API and the gateway gRPC service over a shared store
//! (PostgreSQL for several replicas; SQLite for one), sweeps gateway leases and expires handoff
//! offers. Its gRPC listener serves TLS with a server certificate from the control plane's CA
//! (for `tlsNames`) and admits gateways by the client certificates that CA issued them.
//!
//! A gateway joins once with a one-time join token (`wgctl gateway token create`), which pins
//! the CA: it generates its private key, receives its name and certificate, and keeps them in its
//! data directory — `identity.json` (name, pool, certificate expiry), `gateway.key` (0600),
//! `gateway.crt`, `ca.crt`. From then on it connects to every `controlUrls` entry (`https://`)
//! with mutual TLS, renews its lease with heartbeats and serves SSH.

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
    /// Gateway gRPC listener (TLS).
    #[serde(default = "default_grpc_addr")]
    grpc_addr: SocketAddr,
    /// The DNS names and IP addresses gateways reach this replica by (its server certificate's
    /// names; default `localhost`, `127.0.0.1` and the IP of `grpcAddr` when it is not a
    /// wildcard).
    #[serde(default)]
    tls_names: Option<Vec<String>>,
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
    /// The control-plane replicas' gRPC URLs, e.g. `[https://cp1:8443, https://cp2:8443]`; the
    /// host must be one of the replica's `tlsNames`.
    control_urls: Vec<String>,
    /// Identity (`identity.json`, `gateway.key`, `gateway.crt`, `ca.crt`), the SSH host key
    /// (`host_ed25519`) and the event journal (`events/`).
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
    /// Renew the client certificate at start when it expires within this (default 30d; the
    /// certificate is valid a year).
    #[serde(default, with = "opt_duration")]
    certificate_renew_before: Option<Duration>,
}

fn default_journal_max_bytes() -> u64 {
    wg_gateway::journal::DEFAULT_MAX_BYTES
}

/// Refuses a duration setting outside `[min, max]`, naming the key.
fn check_range(key: &str, value: Duration, min: Duration, max: Duration) -> anyhow::Result<()> {
    if value < min || value > max {
        bail!(
            "{key}: {} is out of range ({} to {})",
            humantime::format_duration(value),
            humantime::format_duration(min),
            humantime::format_duration(max)
        );
    }
    Ok(())
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
    // The error names the key (`gatewayLease: …`) besides the line and column.
    serde_path_to_error::deserialize(serde_yaml_ng::Deserializer::from_str(&text)).map_err(|e| {
        let at = e.path().to_string();
        let inner = e.into_inner();
        if at.is_empty() || at == "." {
            anyhow::anyhow!("in {}: {inner}", path.display())
        } else {
            anyhow::anyhow!("in {}: {at}: {inner}", path.display())
        }
    })
}

/// What a gateway keeps after joining (`identity.json`; the key and certificates are files of
/// their own beside it).
#[derive(Debug, serde::Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Identity {
    name: String,
    pool: String,
    /// When the certificate expires (RFC 3339).
    #[serde(default)]
    certificate_expires: Option<String>,
    /// The same in Unix milliseconds (absent in identities written before it was kept).
    #[serde(default)]
    certificate_expires_ms: Option<i64>,
}

impl Identity {
    /// When the certificate expires (Unix ms), from either field (older identities have only
    /// the RFC 3339 one).
    fn expires_ms(&self) -> Option<i64> {
        self.certificate_expires_ms.or_else(|| {
            let t = humantime::parse_rfc3339(self.certificate_expires.as_deref()?).ok()?;
            let ms = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
            i64::try_from(ms).ok()
        })
    }
}

/// How long before its certificate expires a gateway renews it at start (`certificateRenewBefore`),
/// and starts warning in its log every day that it has not been restarted to do so.
const CERT_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long a start waits for a certificate renewal before going on with the current one.
const RENEWAL_TIMEOUT: Duration = Duration::from_secs(30);

/// The warning for a certificate expiring at `expires_ms`, if one is due at `now_ms`: within
/// `renew_before` of the expiry a restart renews it; with renewal off (`renew_before` 0), the
/// default window ([`CERT_RENEW_BEFORE`]) warns that it must be joined again.
fn certificate_warning(
    name: &str,
    expires_ms: i64,
    now_ms: i64,
    renew_before: Duration,
) -> Option<String> {
    let left_ms = expires_ms.saturating_sub(now_ms);
    let window = if renew_before.is_zero() {
        CERT_RENEW_BEFORE
    } else {
        renew_before
    };
    let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    let at = wg_domain::time::rfc3339(expires_ms);
    let when = if left_ms <= 0 {
        format!("expired at {at}")
    } else if left_ms < window_ms {
        format!("expires at {at} (in {} days)", left_ms / (24 * 3600 * 1000))
    } else {
        return None;
    };
    let what = if renew_before.is_zero() {
        "certificateRenewBefore is 0, so it is not renewed: set it and restart, or join a new \
         gateway"
    } else {
        "a gateway renews it when it starts: restart this gateway before then (its live \
         sessions end; drain it first)"
    };
    Some(format!("the certificate of gateway {name} {when}; {what}"))
}

/// The files of a gateway's TLS identity in its data directory.
const KEY_FILE: &str = "gateway.key";
const CERT_FILE: &str = "gateway.crt";
const CA_FILE: &str = "ca.crt";

/// The default `tlsNames`.
fn default_tls_names(grpc_addr: SocketAddr) -> Vec<String> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let ip = grpc_addr.ip();
    if !ip.is_unspecified() && !names.contains(&ip.to_string()) {
        names.push(ip.to_string());
    }
    names
}

fn read_text(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// The renewed key and certificate, written beside the current ones before they replace them.
const NEXT_KEY_FILE: &str = "gateway.next.key";
const NEXT_CERT_FILE: &str = "gateway.next.crt";
/// Present once both next files are complete: from then on they replace the current ones, even
/// if the process dies halfway through (see [`finish_identity_swap`]).
const NEXT_READY_FILE: &str = "gateway.next.ready";

/// Asks the control plane for a new certificate, on mutual TLS with the current one.
async fn renew_certificate(
    cfg: &GatewayFile,
    identity: &Identity,
    tls: &std::sync::Arc<wg_gateway::TlsIdentity>,
) -> anyhow::Result<(wg_gateway::TlsIdentity, i64)> {
    let auth = wg_gateway::ControlAuth::Mtls(tls.clone());
    let client = wg_gateway::ControlClient::connect_any(&cfg.control_urls, &auth, &identity.name)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    client
        .renew_certificate(tls)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Replaces the gateway's key and certificate with renewed ones so that a crash at any point
/// leaves one matching pair: both new files are written (and synced) beside the current ones,
/// a ready marker says they are complete, then they are renamed over the current ones
/// ([`finish_identity_swap`], which also finishes an interrupted swap at the next start), and
/// `identity.json` is rewritten last.
fn store_renewed_identity(
    dir: &Path,
    tls: &wg_gateway::TlsIdentity,
    identity: &Identity,
) -> anyhow::Result<()> {
    for name in [NEXT_READY_FILE, NEXT_KEY_FILE, NEXT_CERT_FILE] {
        remove_if_present(&dir.join(name))?;
    }
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        wg_control::vault::write_private_file(&path, bytes)
            .with_context(|| format!("writing {}", path.display()))
    };
    write(NEXT_KEY_FILE, tls.key_pem.as_bytes())?;
    write(NEXT_CERT_FILE, tls.cert_pem.as_bytes())?;
    sync_dir(dir)?;
    write(NEXT_READY_FILE, b"")?;
    sync_dir(dir)?;
    finish_identity_swap(dir)?;
    let tmp = dir.join("identity.json.new");
    remove_if_present(&tmp)?;
    write("identity.json.new", &serde_json::to_vec_pretty(identity)?)?;
    std::fs::rename(&tmp, dir.join("identity.json")).context("replacing identity.json")?;
    sync_dir(dir)
}

/// Completes a key/certificate swap: with the ready marker, the next files (those not renamed
/// yet) replace the current ones and the marker goes; without it, next files are leftovers of
/// a renewal that did not finish writing them, and are removed (the current pair stays).
fn finish_identity_swap(dir: &Path) -> anyhow::Result<()> {
    let ready = dir.join(NEXT_READY_FILE);
    if ready.exists() {
        for (next, current) in [(NEXT_KEY_FILE, KEY_FILE), (NEXT_CERT_FILE, CERT_FILE)] {
            let next = dir.join(next);
            if next.exists() {
                std::fs::rename(&next, dir.join(current))
                    .with_context(|| format!("replacing {current} with {}", next.display()))?;
            }
        }
        sync_dir(dir)?;
        remove_if_present(&ready)?;
    } else {
        remove_if_present(&dir.join(NEXT_KEY_FILE))?;
        remove_if_present(&dir.join(NEXT_CERT_FILE))?;
    }
    sync_dir(dir)
}

fn remove_if_present(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// Makes the directory's renames durable.
fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

/// Loads the TLS identity a gateway stored when it joined (or last renewed its certificate),
/// first finishing a certificate swap an earlier run left halfway.
fn load_tls_identity(dir: &Path) -> anyhow::Result<wg_gateway::TlsIdentity> {
    finish_identity_swap(dir)?;
    if !dir.join(CERT_FILE).exists() {
        bail!(
            "{} has no {CERT_FILE}: this gateway joined before gateways used mutual TLS; remove \
             identity.json and join again with a new token (`wgctl gateway token create`)",
            dir.display()
        );
    }
    Ok(wg_gateway::TlsIdentity {
        ca_pem: read_text(&dir.join(CA_FILE))?,
        cert_pem: read_text(&dir.join(CERT_FILE))?,
        key_pem: zeroize::Zeroizing::new(read_text(&dir.join(KEY_FILE))?),
    })
}

/// Writes a gateway's identity after joining: key (0600), certificates, then `identity.json`
/// last (its presence means "joined"). Leftovers of an interrupted earlier write are replaced.
fn store_identity(
    dir: &Path,
    joined: &wg_gateway::Joined,
    identity: &Identity,
) -> anyhow::Result<()> {
    let files: [(&str, &[u8]); 4] = [
        (KEY_FILE, joined.identity.key_pem.as_bytes()),
        (CERT_FILE, joined.identity.cert_pem.as_bytes()),
        (CA_FILE, joined.identity.ca_pem.as_bytes()),
        ("identity.json", &serde_json::to_vec_pretty(identity)?),
    ];
    for (name, bytes) in files {
        let path = dir.join(name);
        remove_if_present(&path)?;
        wg_control::vault::write_private_file(&path, bytes)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Runs a control-plane replica until SIGINT/SIGTERM.
pub(crate) async fn run_control(args: ConfigArgs) -> anyhow::Result<()> {
    let cfg: ControlFile = read_config(&args.config)?;
    let lease = cfg.gateway_lease.unwrap_or(wg_control::DEFAULT_LEASE);
    check_range(
        "gatewayLease",
        lease,
        Duration::from_secs(3),
        Duration::from_secs(600),
    )?;
    crate::dev::create_private_dir(&cfg.data_dir)?;
    std::fs::create_dir_all(&cfg.recordings_dir).context("creating the recording store")?;
    let store = Store::connect(&cfg.store)
        .await
        .with_context(|| format!("opening the store {}", cfg.store))?;
    let vault =
        Vault::open(&cfg.data_dir.join("master.key")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let control = ControlPlane::new(store, vault, ControlConfig::new(&cfg.recordings_dir));
    let ca = control
        .cluster_ca()
        .await
        .map_err(|e| anyhow::anyhow!("the control plane's CA: {e}"))?;
    let tls_names = cfg
        .tls_names
        .clone()
        .unwrap_or_else(|| default_tls_names(cfg.grpc_addr));
    let tls = wg_control::tls::ServerTls::new(ca.clone(), tls_names.clone())
        .map_err(|e| anyhow::anyhow!("the gateway listener's TLS certificate: {e}"))?;
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

    let renewal = tls.spawn_renewal(shutdown.clone());
    let served = crate::dev::serve_control(
        control.clone(),
        cfg.grpc_addr,
        cfg.api_addr,
        None,
        Some(tls),
        lease,
        shutdown.clone(),
    )
    .await?;
    let sweeper = control.spawn_lease_sweeper(lease, shutdown.clone());
    eprintln!(
        "wardengate control: API http://{}/api/v1, gateways grpcs {} (mutual TLS; names {}; CA \
         sha256 {}; lease {})",
        served.api_addr,
        served.grpc_addr,
        tls_names.join(", "),
        ca.pin(),
        wg_domain::time::format_duration(lease)
    );
    crate::dev::wait_for_signal().await;
    eprintln!("wardengate control: shutting down");
    shutdown.cancel();
    // Gateways' command streams never end by themselves: end them, and give requests in flight
    // a few seconds.
    control.gateways().kick_all();
    if tokio::time::timeout(Duration::from_secs(5), served.join())
        .await
        .is_err()
    {
        eprintln!("wardengate control: requests still in flight after 5 s; stopping anyway");
    }
    let _ = sweeper.await;
    let _ = renewal.await;
    Ok(())
}

/// Runs a gateway until SIGINT/SIGTERM; joins first if it has no identity yet.
pub(crate) async fn run_gateway(args: ConfigArgs) -> anyhow::Result<()> {
    let cfg: GatewayFile = read_config(&args.config)?;
    if cfg.control_urls.is_empty() {
        bail!("controlUrls must name at least one control plane");
    }
    let heartbeat = cfg.heartbeat_interval.unwrap_or(Duration::from_secs(3));
    check_range(
        "heartbeatInterval",
        heartbeat,
        Duration::from_millis(500),
        Duration::from_secs(60),
    )?;
    // Checked before anything is spent (a join token is single-use).
    let renew_before = cfg.certificate_renew_before.unwrap_or(CERT_RENEW_BEFORE);
    check_range(
        "certificateRenewBefore",
        renew_before,
        Duration::ZERO,
        Duration::from_secs(3650 * 24 * 3600),
    )?;
    crate::dev::create_private_dir(&cfg.data_dir)?;
    // One gateway per data directory: a second one would take the same identity (the control
    // plane would take it for a restart and close the first one's sessions) and journal.
    let _lock = crate::dev::lock_data_dir(&cfg.data_dir)?;
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
        let joined = wg_gateway::ControlClient::join(&cfg.control_urls, token.trim(), &advertise)
            .await
            .map_err(|e| anyhow::anyhow!("joining the cluster: {e}"))?;
        let identity = Identity {
            name: joined.name.clone(),
            pool: joined.pool.clone(),
            certificate_expires: Some(wg_domain::time::rfc3339(joined.certificate_expires_ms)),
            certificate_expires_ms: Some(joined.certificate_expires_ms),
        };
        store_identity(&cfg.data_dir, &joined, &identity)?;
        eprintln!(
            "wardengate gateway: joined as {} (pool {}); certificate valid until {}",
            identity.name,
            identity.pool,
            identity.certificate_expires.as_deref().unwrap_or("?")
        );
        identity
    };
    let mut identity = identity;
    let mut tls = std::sync::Arc::new(load_tls_identity(&cfg.data_dir)?);
    if let Some(expires_ms) = identity.expires_ms() {
        let left_ms = expires_ms.saturating_sub(wg_domain::time::now_millis());
        if u128::try_from(left_ms).unwrap_or(0) < renew_before.as_millis() {
            // Bounded: a renewal that cannot finish (every replica stalled) must not keep the
            // gateway from starting with the certificate it has.
            let renewal =
                tokio::time::timeout(RENEWAL_TIMEOUT, renew_certificate(&cfg, &identity, &tls))
                    .await
                    .unwrap_or_else(|_| {
                        Err(anyhow::anyhow!(
                            "no control plane answered within {}s",
                            RENEWAL_TIMEOUT.as_secs()
                        ))
                    });
            match renewal {
                Ok((renewed, expires_ms)) => {
                    identity.certificate_expires = Some(wg_domain::time::rfc3339(expires_ms));
                    identity.certificate_expires_ms = Some(expires_ms);
                    store_renewed_identity(&cfg.data_dir, &renewed, &identity)?;
                    tls = std::sync::Arc::new(renewed);
                    eprintln!(
                        "wardengate gateway: {} renewed its certificate; valid until {}",
                        identity.name,
                        wg_domain::time::rfc3339(expires_ms)
                    );
                }
                // The old certificate still works until it expires (if the control plane
                // accepts it at all: the error says): start with it, try again at the next start.
                Err(e) => tracing::warn!(
                    gateway = %identity.name,
                    error = %e,
                    "could not renew the certificate; starting with the current one (renewal is tried again at the next start)"
                ),
            }
        }
    }
    if let Some(expires_ms) = identity.expires_ms() {
        let name = identity.name.clone();
        tokio::spawn(async move {
            let mut day = tokio::time::interval(Duration::from_secs(24 * 3600));
            loop {
                day.tick().await;
                let now = wg_domain::time::now_millis();
                if let Some(w) = certificate_warning(&name, expires_ms, now, renew_before) {
                    tracing::warn!("{w}");
                }
            }
        });
    }
    let host_key = keys::load_or_create(&cfg.data_dir.join("host_ed25519"), &identity.name)?;
    let gateway = wg_gateway::start(
        wg_gateway::GatewayConfig {
            name: identity.name.clone(),
            ssh_addr: cfg.ssh_addr,
            advertise_address: cfg.advertise_address.clone(),
            recordings_root: cfg.recordings_dir.clone(),
            control_urls: cfg.control_urls.clone(),
            control_auth: wg_gateway::ControlAuth::Mtls(tls),
            progress_interval: Duration::from_secs(1),
            max_active: (cfg.max_active > 0).then_some(cfg.max_active),
            heartbeat_interval: Some(heartbeat),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_without_the_millisecond_expiry_still_has_one() {
        let older: Identity = serde_json::from_str(
            r#"{"name":"gw-us-3","pool":"us","certificateExpires":"2026-12-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(older.expires_ms(), Some(1_796_083_200_000));
        let oldest: Identity = serde_json::from_str(r#"{"name":"gw-us-4","pool":"us"}"#).unwrap();
        assert_eq!(oldest.expires_ms(), None);
    }

    /// Every point at which a renewal can stop leaves one matching key/certificate pair.
    #[test]
    fn an_interrupted_certificate_swap_ends_with_one_pair() {
        let write = |dir: &Path, files: &[(&str, &str)]| {
            for (name, text) in files {
                std::fs::write(dir.join(name), text).unwrap();
            }
        };
        let pair = |dir: &Path| {
            (
                std::fs::read_to_string(dir.join(KEY_FILE)).unwrap(),
                std::fs::read_to_string(dir.join(CERT_FILE)).unwrap(),
            )
        };
        let left = |dir: &Path| {
            [NEXT_KEY_FILE, NEXT_CERT_FILE, NEXT_READY_FILE]
                .iter()
                .filter(|f| dir.join(f).exists())
                .count()
        };
        let old = [(KEY_FILE, "old-key"), (CERT_FILE, "old-crt")];
        let new = ("new-key".to_owned(), "new-crt".to_owned());
        let cases: [(&[(&str, &str)], bool); 5] = [
            // Stopped while writing the next files: the old pair stays.
            (&[(NEXT_KEY_FILE, "new-key")], false),
            (
                &[(NEXT_KEY_FILE, "new-key"), (NEXT_CERT_FILE, "new-c")],
                false,
            ),
            // Marked ready: the new pair wins, whichever renames were done.
            (
                &[
                    (NEXT_KEY_FILE, "new-key"),
                    (NEXT_CERT_FILE, "new-crt"),
                    (NEXT_READY_FILE, ""),
                ],
                true,
            ),
            (
                &[
                    (KEY_FILE, "new-key"),
                    (NEXT_CERT_FILE, "new-crt"),
                    (NEXT_READY_FILE, ""),
                ],
                true,
            ),
            (
                &[
                    (KEY_FILE, "new-key"),
                    (CERT_FILE, "new-crt"),
                    (NEXT_READY_FILE, ""),
                ],
                true,
            ),
        ];
        for (i, (state, renewed)) in cases.iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            write(dir.path(), &old);
            write(dir.path(), state);
            finish_identity_swap(dir.path()).unwrap();
            let want = if *renewed {
                new.clone()
            } else {
                ("old-key".to_owned(), "old-crt".to_owned())
            };
            assert_eq!(pair(dir.path()), want, "case {i}");
            assert_eq!(left(dir.path()), 0, "case {i}");
        }
    }

    #[test]
    fn a_certificate_is_warned_about_in_its_last_30_days() {
        let day = 24 * 3600 * 1000;
        let month = Duration::from_secs(30 * 24 * 3600);
        assert_eq!(
            certificate_warning("gw-us-1", 100 * day, 60 * day, month),
            None
        );
        let w = certificate_warning("gw-us-1", 100 * day, 80 * day, month);
        assert!(
            w.as_deref()
                .is_some_and(|w| w.contains("gw-us-1") && w.contains("in 20 days")),
            "{w:?}"
        );
        // The warning follows the renewal window: with 7 days, 20 days left is no warning yet.
        let week = Duration::from_secs(7 * 24 * 3600);
        assert_eq!(
            certificate_warning("gw-us-1", 100 * day, 80 * day, week),
            None
        );
        let off = certificate_warning("gw-us-1", 100 * day, 80 * day, Duration::ZERO);
        assert!(
            off.as_deref().is_some_and(|w| w.contains("not renewed")),
            "{off:?}"
        );
        let expired = certificate_warning("gw-us-1", 100 * day, 101 * day, month);
        assert!(
            expired.as_deref().is_some_and(|w| w.contains("expired at")),
            "{expired:?}"
        );
    }
}
