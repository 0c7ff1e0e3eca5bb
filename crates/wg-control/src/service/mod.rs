//! [`ControlPlane`]: the one place where access decisions are made and where session records
//! change state. Split by responsibility: [`decide`] (access decisions), [`report`] (gateway
//! reports), [`operate`] (operator actions on sessions), [`handoff`] (ownership handoff),
//! [`admin`] (resources, vault, audit, recordings), [`access`] (the policy and limit checks
//! shared by whatever makes a principal a session's owner).

mod access;
mod admin;
mod cluster;
mod decide;
mod handoff;
mod journal;
mod operate;
mod reconnect;
mod report;
pub use report::ProgressItem;

pub use handoff::SessionOwner;
pub use journal::{JournalAck, JournalEvent};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wg_domain::SessionId;
use wg_domain::api::{
    AppliedResource, AuditEventView, AuditVerify, RecordingVerify, SealInfo, SessionView,
    TerminateResponse, TokenCreated, VaultEntry,
};
use wg_domain::audit::ChainVerifier;
use wg_domain::lifecycle::{EndReason, SessionState};
use wg_domain::policy::{self, AccessRequest, Subject};
use wg_domain::resources::{Kind, Protocol, Resource, Role};
use wg_domain::time::{UnixMillis, now_millis, rfc3339};
use wg_proto::v1::gateway_command;
use wg_store::{AuditFilter, SealedSecret, SessionFilter, SessionPatch, SessionRecord, Store};

pub use cluster::{DEFAULT_LEASE, JoinedGateway};

use crate::ControlError;
use crate::gateways::GatewayRegistry;
use crate::vault::{Secret, Vault};
use crate::views::{audit_view, session_view};

/// Control-plane settings.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Root directory of the recording store (`ROOT/<session>/chunk-*.cast`).
    pub recordings_root: PathBuf,
    /// How long a terminate waits for the owning gateway to seal and sever (default 10 s).
    pub terminate_timeout: Duration,
}

impl ControlConfig {
    /// Defaults with the given recording root.
    pub fn new(recordings_root: impl Into<PathBuf>) -> Self {
        ControlConfig {
            recordings_root: recordings_root.into(),
            terminate_timeout: Duration::from_secs(10),
        }
    }
}

/// Filters of [`ControlPlane::list_sessions`] (the REST query parameters).
#[derive(Debug, Clone, Default)]
pub struct SessionQuery {
    /// Exact state; `None` = every state but closed.
    pub state: Option<SessionState>,
    /// Actor name.
    pub actor: Option<String>,
    /// Target name.
    pub target: Option<String>,
    /// Protocol name.
    pub protocol: Option<String>,
    /// Gateway name.
    pub gateway: Option<String>,
    /// Only sessions idle for longer than this.
    pub idle_gt: Option<Duration>,
    /// Page size, 1 to [`MAX_PAGE`] (default [`MAX_PAGE`]).
    pub limit: Option<u32>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// The largest page of sessions one list request returns.
pub(crate) const MAX_PAGE: u32 = 1000;

/// An admitted session: what the gateway needs to open the target leg.
#[derive(Debug)]
pub struct Admitted {
    /// The new session.
    pub session: SessionId,
    /// Target name.
    pub target: String,
    /// `host:port`.
    pub target_address: String,
    /// Pinned host key (OpenSSH format) or `None` for trust on first use.
    pub host_key: Option<String>,
    /// Account to inject.
    pub account: String,
    /// Its credential (`None` for an attach: the target leg is already open).
    pub credential: Option<Secret>,
    /// Recording mode.
    pub recording_mode: String,
    /// Idle timeout.
    pub idle_timeout: Duration,
    /// Idle grace.
    pub idle_grace: Duration,
    /// Admitting policy.
    pub policy: String,
    /// Allowed local forward destinations (`HOST:PORT` rules).
    pub forward_local: Vec<String>,
    /// The connection takes over the terminal of a session already live on the asking gateway
    /// (a `resume` by its owner, or the new owner after a handoff).
    pub attach: bool,
    /// The policy's reconnect behaviour and its grace.
    pub reconnect: wg_domain::resources::Reconnect,
    /// The session's owner (the actor whose policy applies).
    pub owner: String,
}

/// A denied attempt: the session record (closed as `denied`) if one was created, and the error.
#[derive(Debug)]
pub struct Denied {
    /// The closed session record's ID.
    pub session: Option<SessionId>,
    /// Why.
    pub error: ControlError,
}

/// What a gateway asks for when a client wants a target.
#[derive(Debug, Clone)]
pub struct SessionAsk {
    /// Gateway name.
    pub gateway: String,
    /// Gateway's client-facing address.
    pub gateway_address: Option<String>,
    /// Authenticated actor.
    pub actor: String,
    /// Target name.
    pub target: String,
    /// Account named by the client, if any.
    pub account: Option<String>,
    /// Protocol name.
    pub protocol: String,
    /// Client IP.
    pub client_ip: Option<String>,
    /// Client software ident.
    pub client_software: Option<String>,
    /// The gateway's `gateway.maxActive` (`None`: unlimited).
    pub gateway_max_active: Option<u32>,
    /// The client asked for an interactive shell on a terminal: only then may the connection
    /// re-attach a detached session or take a session over.
    pub interactive: bool,
}

/// A lifecycle report from a gateway.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Session.
    pub session: String,
    /// New state name.
    pub state: String,
    /// When.
    pub time_ms: UnixMillis,
    /// With `closed`.
    pub end_reason: Option<EndReason>,
    /// With `closed`.
    pub end_detail: Option<String>,
    /// With `closed`.
    pub exit_status: Option<i32>,
    /// Recording progress or seal.
    pub recording: Option<SealInfo>,
    /// Observed host key for trust on first use.
    pub observed_host_key: Option<String>,
    /// PTY.
    pub pty: Option<(String, u32, u32)>,
}

/// The control plane: cheap to clone.
#[derive(Clone, Debug)]
pub struct ControlPlane {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    vault: Vault,
    gateways: GatewayRegistry,
    config: ControlConfig,
    /// The CA, loaded (or created) on first use: [`ControlPlane::cluster_ca`].
    ca: tokio::sync::OnceCell<Arc<crate::ca::ClusterCa>>,
}

/// The principal of the bootstrap administrator.
pub const BOOTSTRAP_ADMIN: &str = "admin@local";

fn key_identity(text: &str) -> Option<(String, String)> {
    let mut parts = text.split_whitespace();
    Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
}

impl ControlPlane {
    /// A control plane over `store` and `vault`.
    pub fn new(store: Store, vault: Vault, config: ControlConfig) -> Self {
        let store = store.with_chain_hasher(vault.chain_hasher());
        ControlPlane {
            inner: Arc::new(Inner {
                store,
                vault,
                gateways: GatewayRegistry::default(),
                config,
                ca: tokio::sync::OnceCell::new(),
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The gateway registry.
    pub fn gateways(&self) -> &GatewayRegistry {
        &self.inner.gateways
    }

    // ------------------------------------------------------------------ identities and tokens

    /// Creates the bootstrap admin `admin@local` (role admin, the given SSH keys) and an API token
    /// for it, unless that user already exists. Returns the new token, to be shown once. When the
    /// user exists, keys it does not have yet are added (so `wardengate dev --ssh-key` works on a
    /// restart too); its token is never re-issued.
    ///
    /// # Errors
    /// Store failures.
    pub async fn bootstrap_admin(
        &self,
        ssh_keys: Vec<String>,
    ) -> Result<Option<String>, ControlError> {
        let store = &self.inner.store;
        if let Some(existing) = store.get_resource(Kind::User, BOOTSTRAP_ADMIN).await? {
            if let Resource::User(mut u) = existing {
                let known: Vec<_> = u.ssh_keys.iter().filter_map(|k| key_identity(k)).collect();
                let new: Vec<String> = ssh_keys
                    .into_iter()
                    .filter(|k| key_identity(k).is_some_and(|id| !known.contains(&id)))
                    .collect();
                if !new.is_empty() {
                    u.ssh_keys.extend(new);
                    store
                        .apply_resources(&[Resource::User(u)], "system")
                        .await?;
                }
            }
            return Ok(None);
        }
        let user = Resource::User(wg_domain::resources::User {
            name: BOOTSTRAP_ADMIN.into(),
            groups: vec!["admins".into()],
            ssh_keys,
            mfa: None,
            max_sessions_per_user: None,
            role: Some(Role::Admin),
        });
        user.validate().map_err(ControlError::bad_request)?;
        let token = new_api_token()?;
        store
            .put_token(&wg_store::TokenRecord {
                token_sha256: sha256_hex(token.as_bytes()),
                principal: BOOTSTRAP_ADMIN.into(),
                created_ms: now_millis(),
            })
            .await?;
        store.apply_resources(&[user], "system").await?;
        Ok(Some(token))
    }

    /// Issues an API token for the existing user or service principal `principal` (e.g. so that
    /// a plain user can accept a handoff) and writes `token.created` (actor = `by`). Only the
    /// token's SHA-256 is stored; the token is returned to be shown once.
    ///
    /// # Errors
    /// `bad_request` for a blank name, `not_found` when no such principal exists, store failures.
    pub async fn create_token(
        &self,
        principal: &str,
        by: &str,
    ) -> Result<TokenCreated, ControlError> {
        let principal = principal.trim();
        if principal.is_empty() {
            return Err(ControlError::bad_request(
                "name the principal: {\"principal\": \"dan@corp\"}",
            ));
        }
        if self.principal_groups(principal).await?.is_none() {
            return Err(ControlError::not_found(format!(
                "no user or service principal named {principal:?}"
            )));
        }
        let token = new_api_token()?;
        let now = now_millis();
        self.inner
            .store
            .issue_token(
                &wg_store::TokenRecord {
                    token_sha256: sha256_hex(token.as_bytes()),
                    principal: principal.to_owned(),
                    created_ms: now,
                },
                by,
            )
            .await?;
        Ok(TokenCreated {
            principal: principal.to_owned(),
            token,
            created_at: rfc3339(now),
        })
    }

    /// Resolves a bearer token to `(principal, role)`; `None` for unknown tokens.
    ///
    /// # Errors
    /// Store failures.
    pub async fn principal_for_token(
        &self,
        token: &str,
    ) -> Result<Option<(String, Option<Role>)>, ControlError> {
        let Some(rec) = self
            .inner
            .store
            .get_token(&sha256_hex(token.as_bytes()))
            .await?
        else {
            return Ok(None);
        };
        let role = match self
            .inner
            .store
            .get_resource(Kind::User, &rec.principal)
            .await?
        {
            Some(Resource::User(u)) => u.role,
            _ => None,
        };
        Ok(Some((rec.principal, role)))
    }

    /// Authenticates an actor by public key. With `login_actor` given, the key must be registered
    /// to that user or service principal (user first), and only those two resources are read:
    /// a login costs two indexed lookups whatever the number of actors, also for each key a
    /// client offers before the right one. Without, the key must belong to exactly one actor
    /// (every user and service principal is read). Returns the actor's name and groups.
    ///
    /// # Errors
    /// Store failures.
    pub async fn authenticate_actor(
        &self,
        login_actor: Option<&str>,
        public_key: &str,
    ) -> Result<Option<(String, Vec<String>)>, ControlError> {
        let Some(wanted) = key_identity(public_key) else {
            return Ok(None);
        };
        let mut owners: Vec<(String, Vec<String>)> = Vec::new();
        for kind in [Kind::User, Kind::ServicePrincipal] {
            let candidates = match login_actor {
                Some(actor) => self
                    .inner
                    .store
                    .get_resource(kind, actor)
                    .await?
                    .into_iter()
                    .collect(),
                None => self.inner.store.list_resources(kind).await?,
            };
            for r in candidates {
                let (name, groups, keys) = match r {
                    Resource::User(u) => (u.name, u.groups, u.ssh_keys),
                    Resource::ServicePrincipal(s) => (s.name, s.groups, s.ssh_keys),
                    _ => continue,
                };
                if keys
                    .iter()
                    .any(|k| key_identity(k).as_ref() == Some(&wanted))
                {
                    owners.push((name, groups));
                }
            }
        }
        Ok(match login_actor {
            Some(actor) => owners.into_iter().find(|(n, _)| n == actor),
            None if owners.len() == 1 => owners.pop(),
            None => None,
        })
    }

    async fn actor_groups(&self, actor: &str) -> Result<Vec<String>, ControlError> {
        Ok(self.principal_groups(actor).await?.unwrap_or_default())
    }
}

fn parse_session_id(id: &str) -> Result<SessionId, ControlError> {
    id.parse()
        .map_err(|e: wg_domain::ids::BadSessionId| ControlError::bad_request(e.to_string()))
}

fn already_closed(r: &SessionRecord) -> TerminateResponse {
    let recording = r.recording_sha256.as_ref().map(|sha| SealInfo {
        chunks: r.recording_chunks,
        bytes: r.recording_bytes,
        sha256: sha.clone(),
        status: r.recording_status.clone(),
    });
    TerminateResponse {
        session: r.id.to_string(),
        state: r.state,
        already_closed: true,
        terminated_at: r.ended_ms.map(rfc3339),
        end_reason: r.end_reason,
        recording,
        recording_mode: r.recording_mode.clone(),
    }
}

/// A fresh API bearer token: `wgt_` + 48 hex characters from the OS CSPRNG.
fn new_api_token() -> Result<String, ControlError> {
    Ok(format!(
        "wgt_{}",
        wg_domain::ids::random_hex(24).map_err(|e| ControlError::internal(e.to_string()))?
    ))
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
