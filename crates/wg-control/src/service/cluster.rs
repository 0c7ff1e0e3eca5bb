//! Standalone gateways (issue #3): join tokens, gateway identities, heartbeats and the lease.
//!
//! - `wgctl gateway token create --pool us [--ttl 1h]` makes a one-time join token
//!   `wgj_SECRET.CA_PIN` (only the SHA-256 of `wgj_SECRET` is stored; `CA_PIN` is the SHA-256 of
//!   the CA certificate, with which the gateway authenticates the control plane). A gateway
//!   redeems it once ([`ControlPlane::join_gateway`]) with a public key whose private half never
//!   leaves it, and gets its name (`gw-us-1`) and a client certificate from the CA (see
//!   [`crate::ca`]), with which it connects over mutual TLS from then on.
//! - Every heartbeat renews the gateway's lease in the store (so any control-plane replica sees
//!   it). A gateway silent for longer than the lease (default 15 s) is declared lost by the
//!   sweeper — a compare-and-set on its last heartbeat, so one replica wins — with a
//!   `gateway.lost` event; its sessions are closed as `gateway_lost` (recordings sealed as
//!   partial, concurrency slots freed).
//! - A lost gateway that comes back is live again; its heartbeat answer names the sessions the
//!   control plane closed meanwhile, and the gateway severs them: nothing is resurrected.
//! - `wgctl gateway remove NAME` refuses the gateway's certificate from then on and cuts its
//!   stream.

use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use wg_domain::ErrorCode;
use wg_domain::api::{GatewayView, JoinTokenCreated, JoinTokenView};
use wg_domain::audit::{NewAuditEvent, kinds};
use wg_domain::time::{UnixMillis, now_millis, rfc3339};
use wg_store::{GatewayRecord, JoinOutcome, JoinTokenRecord, RevokeTokenOutcome};

use super::*;
use crate::ControlError;
use crate::ca::{CA_KEY_PATH, ClusterCa, GatewayPublicKey};

/// The default gateway lease.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);

/// What a gateway receives when it joins.
#[derive(Clone, Debug)]
pub struct JoinedGateway {
    /// Its name, e.g. `gw-us-1`.
    pub name: String,
    /// Its pool.
    pub pool: String,
    /// Its client certificate (PEM).
    pub certificate_pem: String,
    /// When the certificate expires (Unix milliseconds).
    pub certificate_expires_ms: i64,
    /// The CA certificate (PEM).
    pub ca_pem: String,
}

/// Longest join-token lifetime.
const MAX_JOIN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// A pool name: 1–32 of `[a-z0-9-]`, as it becomes part of gateway names.
fn valid_pool(pool: &str) -> Result<&str, ControlError> {
    let ok = !pool.is_empty()
        && pool.len() <= 32
        && pool
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(pool)
    } else {
        Err(ControlError::bad_request(format!(
            "pool {pool:?} must be 1-32 characters of a-z, 0-9 and '-'"
        )))
    }
}

/// How long `gateway remove` waits for the gateway to end its live sessions itself.
const REMOVE_TERMINATE_WAIT: Duration = Duration::from_secs(4);

/// Orders gateway names naturally: `gw-us-2` before `gw-us-10` (prefix, then trailing number).
fn gateway_sort_key(name: &str) -> (String, u64, String) {
    match name.rsplit_once('-') {
        Some((prefix, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => (
            prefix.to_owned(),
            n.parse().unwrap_or(u64::MAX),
            name.to_owned(),
        ),
        _ => (name.to_owned(), 0, name.to_owned()),
    }
}

impl ControlPlane {
    /// Creates a one-time join token for `pool`, valid for `ttl` (at most 7 days). Returns the
    /// token (shown once) and its record.
    ///
    /// # Errors
    /// `bad_request` for a malformed pool or TTL; store failures.
    pub async fn create_join_token(
        &self,
        pool: &str,
        ttl: Duration,
        by: &str,
    ) -> Result<JoinTokenCreated, ControlError> {
        let pool = valid_pool(pool.trim())?;
        if ttl.is_zero() || ttl > MAX_JOIN_TTL {
            return Err(ControlError::bad_request(
                "the join token's TTL must be between 1 s and 7 days",
            ));
        }
        let ca = self.cluster_ca().await?;
        let secret = format!(
            "wgj_{}",
            wg_domain::ids::random_hex(24).map_err(|e| ControlError::internal(e.to_string()))?
        );
        let token = format!("{secret}.{}", ca.pin());
        let now = now_millis();
        let rec = JoinTokenRecord {
            token_sha256: wg_domain::ids::join_token_sha256(&secret),
            pool: pool.to_owned(),
            created_by: by.to_owned(),
            created_ms: now,
            expires_ms: now + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
            used_ms: None,
            used_by: None,
            revoked_ms: None,
        };
        let event = NewAuditEvent::new(kinds::GATEWAY_TOKEN_CREATED)
            .actor(by)
            .details(json!({"pool": pool, "expires": rfc3339(rec.expires_ms)}));
        self.inner.store.create_join_token(&rec, &event).await?;
        Ok(JoinTokenCreated {
            token,
            pool: pool.to_owned(),
            expires_at: rfc3339(rec.expires_ms),
            ca_sha256: ca.pin().to_owned(),
        })
    }

    /// Every join token (never the token itself).
    ///
    /// # Errors
    /// Store failures.
    pub async fn list_join_tokens(&self) -> Result<Vec<JoinTokenView>, ControlError> {
        let now = now_millis();
        Ok(self
            .inner
            .store
            .list_join_tokens()
            .await?
            .into_iter()
            .map(|t| JoinTokenView {
                id: wg_domain::ids::join_token_id(&t.token_sha256),
                pool: t.pool,
                created_by: t.created_by,
                created_at: rfc3339(t.created_ms),
                expires_at: rfc3339(t.expires_ms),
                state: match (&t.used_by, t.revoked_ms, t.expires_ms <= now) {
                    (Some(_), _, _) => "used".into(),
                    (None, Some(_), _) => "revoked".into(),
                    (None, None, true) => "expired".into(),
                    (None, None, false) => "unused".into(),
                },
                used_by: t.used_by,
            })
            .collect())
    }

    /// Revokes an unused join token by its ID (the first 12 hex digits of its SHA-256, as
    /// `wgctl gateway token list` shows it): a gateway presenting it is refused from then on.
    /// Revoking it again succeeds and says so (`already_revoked`).
    ///
    /// # Errors
    /// `bad_request` for an ID that is not 12 hex digits; `not_found` for an unknown one;
    /// `conflict` for a token a gateway has joined with (remove that gateway instead); store
    /// failures.
    pub async fn revoke_join_token(
        &self,
        id: &str,
        by: &str,
    ) -> Result<wg_domain::api::JoinTokenRevoked, ControlError> {
        let id = id.trim().to_ascii_lowercase();
        if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ControlError::bad_request(format!(
                "{id:?} is not a join token ID (12 hex digits, the ID column of wgctl gateway token list)"
            )));
        }
        let outcome = self
            .inner
            .store
            .revoke_join_token(&id, by, now_millis(), |t| {
                NewAuditEvent::new(kinds::GATEWAY_TOKEN_REVOKED)
                    .actor(by)
                    .details(json!({"id": id, "pool": t.pool, "expires": rfc3339(t.expires_ms)}))
            })
            .await?;
        let revoked = |t: JoinTokenRecord, already: bool| wg_domain::api::JoinTokenRevoked {
            id: id.clone(),
            pool: t.pool,
            already_revoked: already,
        };
        match outcome {
            RevokeTokenOutcome::Revoked(t) => Ok(revoked(t, false)),
            RevokeTokenOutcome::AlreadyRevoked(t) => Ok(revoked(t, true)),
            RevokeTokenOutcome::Used(t) => {
                let by = t.used_by.unwrap_or_else(|| "a gateway".into());
                Err(ControlError::new(
                    ErrorCode::Conflict,
                    format!(
                        "join token {id} was used already by {by}; to cut that gateway off, remove it: wgctl gateway remove {by}"
                    ),
                ))
            }
            RevokeTokenOutcome::Unknown => Err(ControlError::new(
                ErrorCode::NotFound,
                format!("no unused join token with ID {id} (wgctl gateway token list)"),
            )),
            RevokeTokenOutcome::Ambiguous => Err(ControlError::new(
                ErrorCode::Conflict,
                format!("more than one join token has ID {id}; nothing was revoked"),
            )),
        }
    }

    /// Redeems a join token: creates the gateway and issues its client certificate for
    /// `public_key` (an ECDSA P-256 SubjectPublicKeyInfo, DER).
    ///
    /// # Errors
    /// `unauthorized` for an unknown, used or expired token (each said plainly); `bad_request`
    /// for an unusable public key; store failures.
    pub async fn join_gateway(
        &self,
        token: &str,
        public_key: &[u8],
        address: &str,
        version: &str,
    ) -> Result<JoinedGateway, ControlError> {
        let key = GatewayPublicKey::from_spki_der(public_key)?;
        let ca = self.cluster_ca().await?;
        // A racing join may take the same gw-POOL-N first: try again with the next number.
        for _ in 0..5 {
            let mut issued = None;
            let joined = self
                .inner
                .store
                .join_gateway(
                    &wg_domain::ids::join_token_sha256(token),
                    address,
                    version,
                    now_millis(),
                    |name| {
                        let cert = ca.issue_gateway(name, &key).map_err(|e| e.to_string())?;
                        let stored = wg_store::GatewayCertificate {
                            sha256: cert.sha256.clone(),
                            expires_ms: cert.expires_ms,
                        };
                        issued = Some(cert);
                        Ok(stored)
                    },
                    |g| {
                        NewAuditEvent::new(kinds::GATEWAY_JOINED)
                            .actor(format!("gateway:{}", g.name))
                            .details(json!({
                                "pool": g.pool, "address": g.address, "version": g.version,
                                "join": true,
                                "certificate_expires": g.cert_expires_ms.map(rfc3339),
                            }))
                    },
                )
                .await;
            let refused = |why: &str| {
                // In the replica's log, so that a leaked token being tried shows somewhere.
                tracing::warn!(address = %address, why, "a gateway's join token was refused");
                Err(ControlError::new(
                    ErrorCode::Unauthorized,
                    format!("join token refused: {why}"),
                ))
            };
            match joined {
                Ok(JoinOutcome::Joined(g)) => {
                    let Some(cert) = issued else {
                        return Err(ControlError::internal(
                            "the gateway joined without a certificate",
                        ));
                    };
                    return Ok(JoinedGateway {
                        name: g.name,
                        pool: g.pool,
                        certificate_pem: cert.pem,
                        certificate_expires_ms: cert.expires_ms,
                        ca_pem: ca.cert_pem().to_owned(),
                    });
                }
                Ok(JoinOutcome::Unknown) => return refused("unknown token"),
                Ok(JoinOutcome::Used) => return refused("the token was used already"),
                Ok(JoinOutcome::Expired) => return refused("the token expired"),
                Ok(JoinOutcome::Revoked) => return refused("the token was revoked"),
                Ok(JoinOutcome::NotCertified(e)) => {
                    return Err(ControlError::internal(format!(
                        "cannot issue the gateway's certificate: {e}"
                    )));
                }
                Err(e) if e.is_unique_violation() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ControlError::unavailable(
            "could not allocate a gateway name; try again",
        ))
    }

    /// Renews gateway `name`'s client certificate for `public_key` (an ECDSA P-256
    /// SubjectPublicKeyInfo, DER), authorised by the certificate it presented (`presented`:
    /// the SHA-256 hex of its DER; its current or previous one), and writes
    /// `gateway.certificate.renewed`. Returns the new certificate (PEM) and its expiry (Unix ms).
    ///
    /// # Errors
    /// `bad_request` for an unusable public key; `unauthorized` when the presented certificate
    /// is no longer one of the gateway's (retired once the gateway called with a newer one, or
    /// the gateway was removed); store failures.
    pub async fn renew_gateway_certificate(
        &self,
        name: &str,
        presented: &str,
        public_key: &[u8],
    ) -> Result<(String, i64), ControlError> {
        let key = GatewayPublicKey::from_spki_der(public_key)?;
        let ca = self.cluster_ca().await?;
        let cert = ca.issue_gateway(name, &key)?;
        let event = NewAuditEvent::new(kinds::GATEWAY_CERTIFICATE_RENEWED)
            .actor(format!("gateway:{name}"))
            .details(json!({
                "certificate_expires": rfc3339(cert.expires_ms),
                "presented_sha256": presented, "certificate_sha256": cert.sha256,
            }));
        let renewed = self
            .inner
            .store
            .renew_gateway_certificate(
                name,
                presented,
                &wg_store::GatewayCertificate {
                    sha256: cert.sha256.clone(),
                    expires_ms: cert.expires_ms,
                },
                &event,
            )
            .await?;
        if !renewed {
            return Err(ControlError::new(
                ErrorCode::Unauthorized,
                format!(
                    "gateway {name} cannot renew with this certificate: it is no longer one of its own"
                ),
            ));
        }
        Ok((cert.pem, cert.expires_ms))
    }

    /// Forgets gateway `name`'s previous certificate now that it has shown its current one
    /// (`cert_sha256`: SHA-256 hex of its DER); see
    /// [`wg_store::Store::forget_previous_certificate`].
    ///
    /// # Errors
    /// Store failures.
    pub async fn forget_previous_certificate(
        &self,
        name: &str,
        cert_sha256: &str,
    ) -> Result<bool, ControlError> {
        Ok(self
            .inner
            .store
            .forget_previous_certificate(name, cert_sha256)
            .await?)
    }

    /// The gateway whose current (or not yet retired previous) certificate has SHA-256
    /// `cert_sha256` (hex of its DER), whatever its state: the caller refuses a removed one,
    /// saying so.
    ///
    /// # Errors
    /// Store failures.
    pub async fn gateway_for_certificate(
        &self,
        cert_sha256: &str,
    ) -> Result<Option<GatewayRecord>, ControlError> {
        Ok(self.inner.store.gateway_by_certificate(cert_sha256).await?)
    }

    /// The control plane's CA: loaded from the store, or created and stored by the first replica
    /// to start (insert-if-absent, then read back, so that racing replicas all use the one that
    /// was stored). Its private key is sealed by the vault.
    ///
    /// # Errors
    /// Store failures; `internal` when the stored CA does not open under this master key.
    pub async fn cluster_ca(&self) -> Result<Arc<ClusterCa>, ControlError> {
        self.inner
            .ca
            .get_or_try_init(|| self.load_or_create_ca())
            .await
            .cloned()
    }

    async fn load_or_create_ca(&self) -> Result<Arc<ClusterCa>, ControlError> {
        let store = &self.inner.store;
        let stored = match store.control_ca().await? {
            Some(s) => s,
            None => {
                let (ca, key_pem) = ClusterCa::generate()?;
                let (nonce, sealed) = self.inner.vault.seal(CA_KEY_PATH, key_pem.as_bytes())?;
                let stored = store
                    .init_control_ca(&wg_store::StoredCa {
                        cert_pem: ca.cert_pem().to_owned(),
                        key_nonce: nonce,
                        key_sealed: sealed,
                        created_ms: now_millis(),
                    })
                    .await?;
                if stored.cert_pem == ca.cert_pem() {
                    tracing::info!(ca_sha256 = %ca.pin(), "created the control plane's CA");
                    return Ok(Arc::new(ca));
                }
                // Another replica stored its CA first: use that one.
                stored
            }
        };
        let key =
            self.inner
                .vault
                .open_bytes(CA_KEY_PATH, &stored.key_nonce, &stored.key_sealed)?;
        let key = zeroize::Zeroizing::new(
            String::from_utf8(key.to_vec())
                .map_err(|_| ControlError::internal("the stored CA key is not PEM text"))?,
        );
        Ok(Arc::new(ClusterCa::load(&stored.cert_pem, &key)?))
    }

    /// Renews a gateway's lease; returns which of `live` the control plane has closed (the
    /// gateway severs them). A lost gateway that comes back is recorded as joined again.
    ///
    /// # Errors
    /// `unauthorized` for a removed or unknown gateway; store failures.
    pub async fn heartbeat(
        &self,
        gateway: &str,
        live: &[String],
        address: Option<&str>,
        version: Option<&str>,
    ) -> Result<Vec<String>, ControlError> {
        let Some(prev) = self
            .inner
            .store
            .touch_gateway(gateway, address, version, now_millis())
            .await?
        else {
            return Err(ControlError::new(
                ErrorCode::Unauthorized,
                format!("gateway {gateway} is not registered (removed?)"),
            ));
        };
        if prev == "lost" {
            tracing::warn!(gateway, "a gateway declared lost is back");
            let _ = self
                .inner
                .store
                .append_audit(
                    &NewAuditEvent::new(kinds::GATEWAY_JOINED)
                        .actor(format!("gateway:{gateway}"))
                        .details(json!({"returned_after_loss": true})),
                )
                .await;
        }
        let mut closed = Vec::new();
        for id in live {
            let Ok(sid) = id.parse::<SessionId>() else {
                continue;
            };
            match self.inner.store.get_session(sid).await? {
                Some(r) if r.state.is_closed() => closed.push(id.clone()),
                None => closed.push(id.clone()),
                Some(_) => {}
            }
        }
        Ok(closed)
    }

    /// Declares lost every live gateway silent for longer than `lease` — counted from its last
    /// heartbeat, or from `watching_since_ms` (when this replica could last have heard it)
    /// if that is later — closing its sessions as `gateway_lost`. Returns the gateways declared
    /// lost by this call.
    ///
    /// # Errors
    /// Store failures.
    pub async fn sweep_gateway_leases(
        &self,
        lease: Duration,
        watching_since_ms: UnixMillis,
    ) -> Result<Vec<String>, ControlError> {
        let now = now_millis();
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let mut lost = Vec::new();
        for g in self.inner.store.list_gateways().await? {
            if g.state == "removed" {
                // A session a removed gateway was granted while the removal ran (its
                // decision was under way) is closed here: nothing will ever report on it.
                // Looked for during two leases after its last heartbeat, not forever.
                if now - g.last_seen_ms > lease_ms.saturating_mul(2) {
                    continue;
                }
                let n = self.close_gateway_sessions(&g.name, false).await?;
                if n > 0 {
                    tracing::warn!(gateway = %g.name, sessions = n, "closed sessions left on a removed gateway");
                }
                continue;
            }
            if g.state != "live" || now - g.last_seen_ms.max(watching_since_ms) <= lease_ms {
                continue;
            }
            let event = NewAuditEvent::new(kinds::GATEWAY_LOST)
                .actor("system:lease")
                .details(json!({
                    "gateway": g.name, "last_heartbeat": rfc3339(g.last_seen_ms),
                    "lease": wg_domain::time::format_duration(lease),
                }));
            if !self
                .inner
                .store
                .mark_gateway_lost(&g.name, g.last_seen_ms, &event)
                .await?
            {
                continue;
            }
            // Its process may only be stalled and still writing: recordings stay unsealed
            // until it comes back (and seals them) or restarts.
            let n = self.close_gateway_sessions(&g.name, false).await?;
            tracing::warn!(gateway = %g.name, sessions = n, "gateway lost: its sessions were closed");
            lost.push(g.name);
        }
        Ok(lost)
    }

    /// Runs [`ControlPlane::sweep_gateway_leases`] every second until `shutdown`.
    ///
    /// A gateway's silence counts only from when this replica could hear it: from the
    /// replica's start, and again after any stretch in which the sweeper did not run (the
    /// replica stalled, or the store was unreachable) for more than half a lease. Otherwise a
    /// control plane coming back from an outage longer than the lease would find every gateway
    /// "silent" — through no fault of theirs — and end every session of the cluster.
    pub fn spawn_lease_sweeper(
        &self,
        lease: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let control = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut watching_since = now_millis();
            let mut last_sweep = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if last_sweep.elapsed() > lease / 2 {
                    tracing::warn!(
                        "the lease sweeper was held up; gateways get a full lease from now"
                    );
                    watching_since = now_millis();
                }
                match control.sweep_gateway_leases(lease, watching_since).await {
                    Ok(_) => last_sweep = tokio::time::Instant::now(),
                    Err(e) => tracing::error!(error = %e, "gateway lease sweep failed"),
                }
            }
        })
    }

    /// Revokes a gateway: its certificate is refused from now on and its command stream (on this
    /// replica) is cut. Its live sessions end first, terminated through the gateway while it is
    /// still trusted (recordings sealed by it; reason "gateway NAME removed by BY"); those it
    /// cannot end (it is unreachable, or one opened meanwhile) are closed as `gateway_lost`, and
    /// every recording it left unsealed is sealed as `partial`. A removed gateway that is still
    /// running severs whatever it has left once its next call is refused.
    ///
    /// # Errors
    /// `not_found` for an unknown or already removed gateway; store failures.
    pub async fn remove_gateway(&self, name: &str, by: &str) -> Result<(), ControlError> {
        let store = &self.inner.store;
        if !store
            .list_gateways()
            .await?
            .iter()
            .any(|g| g.name == name && g.state != "removed")
        {
            return Err(ControlError::not_found(format!(
                "no gateway {name} (or it was removed already)"
            )));
        }
        let live = store
            .list_sessions(&SessionFilter {
                gateway: Some(name.to_owned()),
                limit: Some(100_000),
                ..Default::default()
            })
            .await?;
        let reason = format!("gateway {name} removed by {by}");
        let ids: Vec<String> = live.iter().map(|r| r.id.to_string()).collect();
        // A gateway that does not answer within a few seconds (stalled, unreachable) is not
        // waited for: what it did not end is closed below.
        let ending = futures::future::join_all(
            ids.iter()
                .map(|id| self.terminate_one(id, &reason, by, None)),
        );
        match tokio::time::timeout(REMOVE_TERMINATE_WAIT, ending).await {
            Ok(outcomes) => {
                for (id, outcome) in ids.iter().zip(outcomes) {
                    if let Err(e) = outcome {
                        tracing::warn!(session = %id, gateway = name, error = %e, "cannot end a removed gateway's session through it");
                    }
                }
            }
            Err(_) => {
                tracing::warn!(
                    gateway = name,
                    "the gateway did not end its sessions in time; closing them as lost"
                );
            }
        }
        let event = NewAuditEvent::new(kinds::GATEWAY_REMOVED)
            .actor(by)
            .details(json!({"gateway": name}));
        if !store.remove_gateway(name, &event).await? {
            return Err(ControlError::not_found(format!(
                "no gateway {name} (or it was removed already)"
            )));
        }
        self.inner.gateways.kick(name);
        // It will never report again: what is still open is closed, what it left unsealed is
        // sealed as partial.
        let closed = self.close_gateway_sessions(name, true).await?;
        let sealed = self.seal_lost_recordings(name).await?;
        if closed + sealed > 0 {
            tracing::warn!(
                gateway = name,
                sessions = closed,
                recordings = sealed,
                "closed a removed gateway's leftovers"
            );
        }
        Ok(())
    }

    /// Every registered gateway with its live sessions and last heartbeat. The in-process `dev`
    /// gateway, which has no registration, is listed while connected.
    ///
    /// # Errors
    /// Store failures.
    pub async fn list_gateways(&self) -> Result<Vec<GatewayView>, ControlError> {
        let store = &self.inner.store;
        let mut out = Vec::new();
        let mut known = std::collections::HashSet::new();
        for g in store.list_gateways().await? {
            known.insert(g.name.clone());
            out.push(GatewayView {
                live_sessions: self.live_sessions_on(&g.name).await?,
                name: g.name,
                pool: g.pool,
                address: g.address,
                version: g.version,
                last_heartbeat: rfc3339(g.last_seen_ms),
                state: g.state,
                certificate_expires_at: g.cert_expires_ms.map(rfc3339),
            });
        }
        for c in self.inner.gateways.list() {
            if known.contains(&c.name) {
                continue;
            }
            out.push(GatewayView {
                live_sessions: self.live_sessions_on(&c.name).await?,
                name: c.name,
                pool: "-".into(),
                address: c.address,
                version: c.version,
                last_heartbeat: rfc3339(now_millis()),
                state: "live".into(),
                certificate_expires_at: None,
            });
        }
        // gw-us-2 before gw-us-10: by the name's prefix, then its number.
        out.sort_by_cached_key(|g| gateway_sort_key(&g.name));
        Ok(out)
    }

    async fn live_sessions_on(&self, gateway: &str) -> Result<u64, ControlError> {
        let n = self
            .inner
            .store
            .list_sessions(&SessionFilter {
                gateway: Some(gateway.to_owned()),
                limit: Some(100_000),
                ..Default::default()
            })
            .await?
            .len();
        Ok(u64::try_from(n).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn gateways_sort_by_prefix_then_number() {
        let mut names = vec!["gw-us-10", "gw-eu-1", "gw-us-2", "gw-dev-1", "gw-us-1"];
        names.sort_by_cached_key(|n| super::gateway_sort_key(n));
        assert_eq!(
            names,
            vec!["gw-dev-1", "gw-eu-1", "gw-us-1", "gw-us-2", "gw-us-10"]
        );
    }
}
