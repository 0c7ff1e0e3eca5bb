//! [`ControlPlane`]: the one place where access decisions are made and where session records
//! change state.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use wg_domain::api::{
    AppliedResource, AuditEventView, AuditVerify, RecordingVerify, SealInfo, SessionView,
    TerminateResponse, VaultEntry,
};
use wg_domain::audit::{ChainVerifier, NewAuditEvent, kinds};
use wg_domain::lifecycle::{EndReason, SessionState};
use wg_domain::policy::{self, AccessRequest, Subject};
use wg_domain::resources::{Kind, Protocol, Resource, Role};
use wg_domain::time::{UnixMillis, now_millis, rfc3339};
use wg_domain::{ErrorCode, SessionId};
use wg_proto::v1::gateway_command;
use wg_store::{AuditFilter, SealedSecret, SessionFilter, SessionPatch, SessionRecord, Store};

use crate::gateways::GatewayRegistry;
use crate::vault::{Secret, Vault};
use crate::views::{audit_view, session_view};
use crate::ControlError;

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
}

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
    /// Its credential.
    pub credential: Secret,
    /// Recording mode.
    pub recording_mode: String,
    /// Idle timeout.
    pub idle_timeout: Duration,
    /// Idle grace.
    pub idle_grace: Duration,
    /// Admitting policy.
    pub policy: String,
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
        ControlPlane {
            inner: Arc::new(Inner {
                store,
                vault,
                gateways: GatewayRegistry::default(),
                config,
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
    /// for it, unless that user already exists. Returns the new token, to be shown once.
    ///
    /// # Errors
    /// Store failures.
    pub async fn bootstrap_admin(&self, ssh_keys: Vec<String>) -> Result<Option<String>, ControlError> {
        let store = &self.inner.store;
        if store.get_resource(Kind::User, BOOTSTRAP_ADMIN).await?.is_some() {
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
        let token = format!(
            "wgt_{}",
            wg_domain::ids::random_hex(24).map_err(|e| ControlError::internal(e.to_string()))?
        );
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

    /// Resolves a bearer token to `(principal, role)`; `None` for unknown tokens.
    ///
    /// # Errors
    /// Store failures.
    pub async fn principal_for_token(&self, token: &str) -> Result<Option<(String, Option<Role>)>, ControlError> {
        let Some(rec) = self.inner.store.get_token(&sha256_hex(token.as_bytes())).await? else {
            return Ok(None);
        };
        let role = match self.inner.store.get_resource(Kind::User, &rec.principal).await? {
            Some(Resource::User(u)) => u.role,
            _ => None,
        };
        Ok(Some((rec.principal, role)))
    }

    /// Authenticates an actor by public key. With `login_actor` given, the key must be registered
    /// to that user or service principal; without, it must belong to exactly one actor. Returns
    /// the actor's name and groups.
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
            for r in self.inner.store.list_resources(kind).await? {
                let (name, groups, keys) = match r {
                    Resource::User(u) => (u.name, u.groups, u.ssh_keys),
                    Resource::ServicePrincipal(s) => (s.name, s.groups, s.ssh_keys),
                    _ => continue,
                };
                if keys.iter().any(|k| key_identity(k).as_ref() == Some(&wanted)) {
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
        Ok(match self.inner.store.get_resource(Kind::User, actor).await? {
            Some(Resource::User(u)) => u.groups,
            _ => match self
                .inner
                .store
                .get_resource(Kind::ServicePrincipal, actor)
                .await?
            {
                Some(Resource::ServicePrincipal(s)) => s.groups,
                _ => Vec::new(),
            },
        })
    }

    // ------------------------------------------------------------------ access decision

    /// Decides an access attempt (PRODUCT.md §4). Creates the session in `requested`; a denial
    /// closes it as `denied` with a `session.denied` event before any vault access; an admission
    /// moves it to `approved` and releases the account credential to the asking gateway.
    pub async fn request_session(&self, ask: SessionAsk) -> Result<Admitted, Denied> {
        let deny = |error| Denied {
            session: None,
            error,
        };
        let protocol: Protocol = ask
            .protocol
            .parse()
            .map_err(|e: wg_domain::lifecycle::UnknownName| deny(ControlError::bad_request(e.to_string())))?;
        let id = SessionId::generate().map_err(|e| deny(ControlError::internal(e.to_string())))?;
        let groups = self.actor_groups(&ask.actor).await.map_err(deny)?;
        let now = now_millis();
        let target = self
            .inner
            .store
            .get_resource(Kind::Target, &ask.target)
            .await
            .map_err(|e| deny(e.into()))?;
        let target_address = match &target {
            Some(Resource::Target(t)) => t.address.clone(),
            _ => String::new(),
        };
        let record = SessionRecord {
            id,
            state: SessionState::Requested,
            actor: ask.actor.clone(),
            actor_groups: groups.clone(),
            target: ask.target.clone(),
            target_address,
            protocol: protocol.as_str().into(),
            account: ask.account.clone(),
            vault_path: None,
            policy: None,
            mfa: None,
            gateway: ask.gateway.clone(),
            gateway_address: ask.gateway_address.clone(),
            client_ip: ask.client_ip.clone(),
            client_geo: None,
            client_software: ask.client_software.clone(),
            pty_term: None,
            pty_cols: None,
            pty_rows: None,
            recording_mode: String::new(),
            recording_chunks: 0,
            recording_bytes: 0,
            recording_status: "none".into(),
            recording_sha256: None,
            created_ms: now,
            opened_ms: None,
            last_input_ms: now,
            ended_ms: None,
            end_reason: None,
            end_detail: None,
            exit_status: None,
        };
        let requested = NewAuditEvent::new(kinds::SESSION_REQUESTED)
            .actor(&ask.actor)
            .session(id)
            .details(json!({
                "target": ask.target, "account": ask.account, "protocol": protocol.as_str(),
                "gateway": ask.gateway, "client_ip": ask.client_ip,
                "client_software": ask.client_software,
            }));
        self.inner
            .store
            .insert_session(&record, Some(&requested))
            .await
            .map_err(|e| deny(e.into()))?;

        match self.decide(&ask, &groups, target, protocol).await {
            Ok((admission, t)) => self.approve(id, &ask, admission, t).await,
            Err(error) => {
                self.close_denied(id, &ask.actor, &error).await;
                Err(Denied {
                    session: Some(id),
                    error,
                })
            }
        }
    }

    async fn decide(
        &self,
        ask: &SessionAsk,
        groups: &[String],
        target: Option<Resource>,
        protocol: Protocol,
    ) -> Result<(policy::Admission, wg_domain::resources::Target), ControlError> {
        let Some(Resource::Target(target)) = target else {
            return Err(ControlError::new(
                ErrorCode::NotFound,
                format!("unknown target {:?}", ask.target),
            ));
        };
        let policies: Vec<_> = self
            .inner
            .store
            .list_resources(Kind::Policy)
            .await?
            .into_iter()
            .filter_map(|r| match r {
                Resource::Policy(p) => Some(p),
                _ => None,
            })
            .collect();
        let admission = policy::evaluate(
            AccessRequest {
                subject: Subject {
                    name: &ask.actor,
                    groups,
                },
                target: &target,
                protocol,
                account: ask.account.as_deref(),
            },
            &policies,
        )
        .map_err(|d| {
            let mut e = ControlError::new(ErrorCode::PolicyDenied, d.to_string());
            e.0.target = Some(target.name.clone());
            e
        })?;
        Ok((admission, target))
    }

    async fn close_denied(&self, id: SessionId, actor: &str, error: &ControlError) {
        let patch = SessionPatch {
            ended_ms: Some(now_millis()),
            end_reason: Some(EndReason::Denied),
            end_detail: Some(error.0.message.clone()),
            ..Default::default()
        };
        let mut details = json!({"error": error.code().as_str(), "message": error.0.message});
        if let Some(scope) = &error.0.scope {
            details["scope"] = json!(scope);
            details["limit"] = json!(error.0.limit);
        }
        let denied = NewAuditEvent::new(kinds::SESSION_DENIED)
            .actor(actor)
            .session(id)
            .reason(error.0.message.clone())
            .details(details);
        let closed = NewAuditEvent::new(kinds::SESSION_CLOSED)
            .actor(actor)
            .session(id)
            .details(json!({"end_reason": "denied"}));
        if let Err(e) = self
            .inner
            .store
            .transition_session(
                id,
                SessionState::Requested,
                SessionState::Closed,
                &patch,
                &[denied, closed],
            )
            .await
        {
            tracing::error!(session = %id, error = %e, "cannot record denial");
        }
    }

    async fn approve(
        &self,
        id: SessionId,
        ask: &SessionAsk,
        admission: policy::Admission,
        target: wg_domain::resources::Target,
    ) -> Result<Admitted, Denied> {
        let store = &self.inner.store;
        let fail = |error: ControlError| Denied {
            session: Some(id),
            error,
        };
        let credential = match store.get_secret(&admission.credential).await {
            Ok(Some(s)) => self
                .inner
                .vault
                .open_secret(&s.path, &s.kind, &s.nonce, &s.ciphertext)
                .map_err(fail)?,
            Ok(None) => {
                let e = ControlError::unavailable(format!(
                    "the credential {} of account {} is not in the vault (wgctl vault put)",
                    admission.credential, admission.account
                ));
                self.close_denied(id, &ask.actor, &e).await;
                return Err(fail(e));
            }
            Err(e) => return Err(fail(e.into())),
        };
        let patch = SessionPatch {
            account: Some(admission.account.clone()),
            vault_path: Some(admission.credential.clone()),
            policy: Some(admission.policy.clone()),
            recording_mode: Some(admission.recording.as_str().into()),
            ..Default::default()
        };
        let approved = NewAuditEvent::new(kinds::SESSION_APPROVED)
            .actor(&ask.actor)
            .session(id)
            .details(json!({
                "policy": admission.policy, "account": admission.account,
                "vault_path": admission.credential, "recording": admission.recording.as_str(),
            }));
        let moved = store
            .transition_session(id, SessionState::Requested, SessionState::Approved, &patch, &[approved])
            .await
            .map_err(|e| fail(e.into()))?;
        if !moved {
            return Err(fail(ControlError::new(
                ErrorCode::Conflict,
                "the session was terminated while it was being decided",
            )));
        }
        Ok(Admitted {
            session: id,
            target: target.name.clone(),
            target_address: target.address.clone(),
            host_key: target.host_key.clone(),
            account: admission.account,
            credential,
            recording_mode: admission.recording.as_str().into(),
            idle_timeout: admission.idle_timeout,
            idle_grace: admission.idle_grace,
            policy: admission.policy,
        })
    }

    // ------------------------------------------------------------------ gateway reports

    /// Applies a gateway's lifecycle report. A report for a later state walks the lifecycle's
    /// intermediate states in order; a report the lifecycle cannot reach from the current state
    /// (e.g. `active` for a closed session) is rejected and logged, never applied.
    ///
    /// # Errors
    /// `not_found`, `forbidden` (another gateway's session), `conflict` (illegal transition).
    pub async fn report(&self, gateway: &str, report: Report) -> Result<(), ControlError> {
        let id: SessionId = report
            .session
            .parse()
            .map_err(|e: wg_domain::ids::BadSessionId| ControlError::bad_request(e.to_string()))?;
        let to: SessionState = report
            .state
            .parse()
            .map_err(|e: wg_domain::lifecycle::UnknownName| ControlError::bad_request(e.to_string()))?;
        for _attempt in 0..5 {
            let Some(cur) = self.inner.store.get_session(id).await? else {
                return Err(ControlError::not_found(format!("no session {id}")));
            };
            if cur.gateway != gateway {
                return Err(ControlError::new(
                    ErrorCode::Forbidden,
                    format!("session {id} belongs to gateway {}", cur.gateway),
                ));
            }
            if cur.state == to {
                return Ok(());
            }
            let Some(path) = cur.state.path_to(to) else {
                tracing::warn!(session = %id, from = %cur.state, to = %to, gateway, "rejected out-of-order session report");
                return Err(ControlError::new(
                    ErrorCode::Conflict,
                    format!("illegal session transition {} -> {to}", cur.state),
                ));
            };
            let mut from = cur.state;
            let mut raced = false;
            for step in path {
                let (patch, events) = self.step_effects(&cur, step, &report).await?;
                if !self
                    .inner
                    .store
                    .transition_session(id, from, step, &patch, &events)
                    .await?
                {
                    raced = true;
                    break;
                }
                from = step;
            }
            if !raced {
                return Ok(());
            }
        }
        Err(ControlError::new(
            ErrorCode::Conflict,
            format!("session {id} kept changing; report not applied"),
        ))
    }

    async fn step_effects(
        &self,
        cur: &SessionRecord,
        step: SessionState,
        report: &Report,
    ) -> Result<(SessionPatch, Vec<NewAuditEvent>), ControlError> {
        let mut patch = SessionPatch::default();
        let mut events = Vec::new();
        let ev = |kind: &str| {
            NewAuditEvent::new(kind)
                .actor(cur.actor.clone())
                .session(cur.id)
        };
        if let Some((term, cols, rows)) = &report.pty {
            patch.pty_term = Some(term.clone());
            patch.pty_cols = Some(*cols);
            patch.pty_rows = Some(*rows);
        }
        match step {
            SessionState::Opened => {
                patch.opened_ms = Some(report.time_ms);
                patch.last_input_ms = Some(report.time_ms);
                if cur.recording_mode == "full" {
                    patch.recording_status = Some("recording".into());
                    patch.recording_chunks = Some(1);
                }
                let mut details = json!({
                    "target": cur.target, "target_address": cur.target_address,
                    "account": cur.account, "gateway": cur.gateway,
                });
                if let Some(key) = &report.observed_host_key {
                    if self.pin_host_key(&cur.target, key).await? {
                        details["host_key_pinned"] = json!(key);
                    }
                }
                events.push(ev(kinds::SESSION_OPENED).details(details));
            }
            SessionState::Idle => {
                events.push(ev(kinds::SESSION_IDLE_WARNING));
            }
            SessionState::Closed => {
                patch.ended_ms = Some(report.time_ms);
                let reason = report.end_reason.unwrap_or(EndReason::ClientExit);
                patch.end_reason = Some(reason);
                patch.exit_status = report.exit_status;
                if cur.end_detail.is_none() {
                    patch.end_detail = report.end_detail.clone();
                }
                if let Some(seal) = &report.recording {
                    patch.recording_chunks = Some(seal.chunks);
                    patch.recording_bytes = Some(seal.bytes);
                    patch.recording_status = Some(seal.status.clone());
                    patch.recording_sha256 = Some(seal.sha256.clone());
                    events.push(ev(kinds::RECORDING_SEALED).details(json!({
                        "chunks": seal.chunks, "bytes": seal.bytes,
                        "sha256": seal.sha256, "status": seal.status,
                    })));
                }
                events.push(ev(kinds::SESSION_CLOSED).details(json!({
                    "end_reason": reason.as_str(), "exit_status": report.exit_status,
                    "detail": report.end_detail,
                })));
            }
            SessionState::Requested
            | SessionState::Approved
            | SessionState::Active
            | SessionState::Closing => {}
        }
        Ok((patch, events))
    }

    /// Pins `key` as the host key of `target` if it has none (trust on first use). Returns whether
    /// it pinned.
    async fn pin_host_key(&self, target: &str, key: &str) -> Result<bool, ControlError> {
        let store = &self.inner.store;
        if let Some(Resource::Target(mut t)) = store.get_resource(Kind::Target, target).await? {
            if t.host_key.is_none() {
                t.host_key = Some(key.to_owned());
                store
                    .apply_resources(&[Resource::Target(t)], "system:trust-on-first-use")
                    .await?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Applies activity and progress of a live session (never to a closed one).
    ///
    /// # Errors
    /// Store failures.
    pub async fn progress(
        &self,
        session: &str,
        last_input_ms: Option<UnixMillis>,
        pty: Option<(String, u32, u32)>,
        recording: Option<(u32, u64)>,
    ) -> Result<(), ControlError> {
        let Ok(id) = session.parse::<SessionId>() else {
            return Ok(());
        };
        let mut patch = SessionPatch {
            last_input_ms,
            ..Default::default()
        };
        if let Some((term, cols, rows)) = pty {
            patch.pty_term = Some(term);
            patch.pty_cols = Some(cols);
            patch.pty_rows = Some(rows);
        }
        if let Some((chunks, bytes)) = recording {
            patch.recording_chunks = Some(chunks);
            patch.recording_bytes = Some(bytes);
        }
        self.inner.store.update_session(id, &patch).await?;
        Ok(())
    }

    // ------------------------------------------------------------------ operator actions

    /// Lists sessions (cluster-wide), newest first.
    ///
    /// # Errors
    /// Store failures.
    pub async fn list_sessions(&self, q: &SessionQuery) -> Result<Vec<SessionView>, ControlError> {
        let now = now_millis();
        let filter = SessionFilter {
            states: q.state.into_iter().collect(),
            actor: q.actor.clone(),
            target: q.target.clone(),
            protocol: q.protocol.clone(),
            gateway: q.gateway.clone(),
            last_input_before_ms: q
                .idle_gt
                .map(|d| now - i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            limit: None,
        };
        Ok(self
            .inner
            .store
            .list_sessions(&filter)
            .await?
            .iter()
            .map(|r| session_view(r, now))
            .collect())
    }

    /// One session.
    ///
    /// # Errors
    /// `bad_request` for a malformed ID, `not_found`.
    pub async fn get_session(&self, id: &str) -> Result<SessionView, ControlError> {
        let id = parse_session_id(id)?;
        let r = self
            .inner
            .store
            .get_session(id)
            .await?
            .ok_or_else(|| ControlError::not_found(format!("no session {id}")))?;
        Ok(session_view(&r, now_millis()))
    }

    /// Forcibly terminates a session: a `session.terminated` event with the operator and reason,
    /// then a targeted close to the owning gateway, which flushes and seals the recording and then
    /// severs both legs. Of concurrent terminations exactly one transitions the session; the others
    /// return its state. Terminating a closed session changes nothing and says so.
    ///
    /// # Errors
    /// `bad_request` without a reason or with a malformed ID, `not_found`, `unavailable` when the
    /// owning gateway cannot be reached.
    pub async fn terminate(
        &self,
        id: &str,
        reason: &str,
        operator: &str,
    ) -> Result<TerminateResponse, ControlError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(ControlError::bad_request(
                "--reason is required for a forced termination",
            ));
        }
        let id = parse_session_id(id)?;
        let store = &self.inner.store;
        let terminated_ev = || {
            NewAuditEvent::new(kinds::SESSION_TERMINATED)
                .actor(operator)
                .session(id)
                .reason(reason)
        };
        let patch = SessionPatch {
            end_reason: Some(EndReason::Terminated),
            end_detail: Some(reason.to_owned()),
            ..Default::default()
        };
        let record = loop {
            let Some(cur) = store.get_session(id).await? else {
                return Err(ControlError::not_found(format!("no session {id}")));
            };
            match cur.state {
                SessionState::Closed => return Ok(already_closed(&cur)),
                SessionState::Closing => {
                    // Someone else is closing it: report the outcome once it is closed.
                    return self.await_closed(id, false).await;
                }
                SessionState::Requested => {
                    let mut p = patch.clone();
                    p.ended_ms = Some(now_millis());
                    let closed = NewAuditEvent::new(kinds::SESSION_CLOSED)
                        .actor(cur.actor.clone())
                        .session(id)
                        .details(json!({"end_reason": "terminated"}));
                    if store
                        .transition_session(id, cur.state, SessionState::Closed, &p, &[terminated_ev(), closed])
                        .await?
                    {
                        return self.await_closed(id, true).await;
                    }
                }
                from => {
                    if store
                        .transition_session(id, from, SessionState::Closing, &patch, &[terminated_ev()])
                        .await?
                    {
                        break cur;
                    }
                }
            }
        };
        let result = self
            .inner
            .gateways
            .send(
                &record.gateway,
                gateway_command::Command::Terminate(wg_proto::v1::Terminate {
                    session_id: id.to_string(),
                    reason: reason.to_owned(),
                    operator: operator.to_owned(),
                }),
                self.inner.config.terminate_timeout,
            )
            .await;
        match result {
            Ok(r) if r.ok => self.await_closed(id, true).await,
            Ok(r) => {
                // The gateway no longer runs it (it ended on its own meanwhile): its closed report
                // is on the way or already applied.
                tracing::info!(session = %id, error = %r.error, "gateway did not find the session to terminate");
                self.await_closed(id, true).await
            }
            Err(e) => Err(e),
        }
    }

    /// Waits (up to the terminate timeout) for a closing session to be reported closed.
    async fn await_closed(&self, id: SessionId, won: bool) -> Result<TerminateResponse, ControlError> {
        let deadline = tokio::time::Instant::now() + self.inner.config.terminate_timeout;
        loop {
            if let Some(r) = self.inner.store.get_session(id).await? {
                if r.state.is_closed() {
                    let mut resp = already_closed(&r);
                    resp.already_closed = !won;
                    return Ok(resp);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ControlError::unavailable(format!(
                    "session {id} is closing but its gateway has not confirmed within {} s",
                    self.inner.config.terminate_timeout.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // ------------------------------------------------------------------ resources and vault

    /// Applies a resource file: every document or none.
    ///
    /// # Errors
    /// `bad_request` naming the line and column of the first problem.
    pub async fn apply(&self, yaml: &str, actor: &str) -> Result<Vec<AppliedResource>, ControlError> {
        let resources = wg_domain::resources::parse_documents(yaml)
            .map_err(|e| ControlError::bad_request(e.to_string()))?;
        if resources.is_empty() {
            return Err(ControlError::bad_request("the file holds no resources"));
        }
        Ok(self.inner.store.apply_resources(&resources, actor).await?)
    }

    /// One resource.
    ///
    /// # Errors
    /// `not_found`.
    pub async fn get_resource(&self, kind: Kind, name: &str) -> Result<Resource, ControlError> {
        self.inner
            .store
            .get_resource(kind, name)
            .await?
            .ok_or_else(|| ControlError::not_found(format!("no {} named {name:?}", kind.as_str())))
    }

    /// Every resource of a kind.
    ///
    /// # Errors
    /// Store failures.
    pub async fn list_resources(&self, kind: Kind) -> Result<Vec<Resource>, ControlError> {
        Ok(self.inner.store.list_resources(kind).await?)
    }

    /// Deletes a resource.
    ///
    /// # Errors
    /// `not_found`.
    pub async fn delete_resource(&self, kind: Kind, name: &str, actor: &str) -> Result<(), ControlError> {
        if self.inner.store.delete_resource(kind, name, actor).await? {
            Ok(())
        } else {
            Err(ControlError::not_found(format!("no {} named {name:?}", kind.as_str())))
        }
    }

    /// Stores a secret, encrypted.
    ///
    /// # Errors
    /// `bad_request` for a bad path, kind or key format.
    pub async fn vault_put(&self, path: &str, kind: &str, secret: &str, actor: &str) -> Result<VaultEntry, ControlError> {
        if !path.starts_with("vault/")
            || path.len() < 7
            || path.split('/').any(|p| p.is_empty() || p == "." || p == "..")
        {
            return Err(ControlError::bad_request(format!(
                "vault path {path:?} must look like vault/ssh/NAME"
            )));
        }
        match kind {
            "password" if !secret.is_empty() => {}
            "private_key" if secret.contains("-----BEGIN") && secret.contains("PRIVATE KEY-----") => {}
            "password" => return Err(ControlError::bad_request("the password is empty")),
            "private_key" => {
                return Err(ControlError::bad_request(
                    "the private key is not in PEM form (-----BEGIN OPENSSH PRIVATE KEY-----)",
                ));
            }
            other => {
                return Err(ControlError::bad_request(format!(
                    "secret kind {other:?} must be password or private_key"
                )));
            }
        }
        let (nonce, ciphertext) = self.inner.vault.seal(path, secret.as_bytes())?;
        let now = now_millis();
        self.inner
            .store
            .put_secret(
                &SealedSecret {
                    path: path.to_owned(),
                    kind: kind.to_owned(),
                    nonce,
                    ciphertext,
                    updated_ms: now,
                },
                actor,
            )
            .await?;
        Ok(VaultEntry {
            path: path.to_owned(),
            kind: kind.to_owned(),
            updated_at: rfc3339(now),
        })
    }

    /// Vault entries' metadata.
    ///
    /// # Errors
    /// Store failures.
    pub async fn vault_list(&self) -> Result<Vec<VaultEntry>, ControlError> {
        Ok(self
            .inner
            .store
            .list_secrets()
            .await?
            .into_iter()
            .map(|s| VaultEntry {
                path: s.path,
                kind: s.kind,
                updated_at: rfc3339(s.updated_ms),
            })
            .collect())
    }

    // ------------------------------------------------------------------ audit and recordings

    /// Audit events in chain order.
    ///
    /// # Errors
    /// Store failures.
    pub async fn audit_list(&self, session: Option<String>, kind: Option<String>) -> Result<Vec<AuditEventView>, ControlError> {
        let filter = AuditFilter {
            session,
            kind,
            after_seq: None,
            limit: None,
        };
        Ok(self
            .inner
            .store
            .list_audit(&filter)
            .await?
            .iter()
            .map(audit_view)
            .collect())
    }

    /// Verifies the whole audit chain against the stored chain head.
    ///
    /// # Errors
    /// Store failures (a broken chain is an `ok: false` answer, not an error).
    pub async fn audit_verify(&self) -> Result<AuditVerify, ControlError> {
        let (head_seq, head_hash) = self.inner.store.audit_head().await?;
        let mut verifier = ChainVerifier::default();
        let mut after = 0;
        let mut count = 0;
        loop {
            let page = self
                .inner
                .store
                .list_audit(&AuditFilter {
                    after_seq: Some(after),
                    limit: Some(5000),
                    ..Default::default()
                })
                .await?;
            if page.is_empty() {
                break;
            }
            for e in &page {
                if let Err(err) = verifier.push(e) {
                    return Ok(AuditVerify {
                        ok: false,
                        events: count,
                        error: Some(err.to_string()),
                    });
                }
                count += 1;
                after = e.seq;
            }
        }
        match verifier.finish(head_seq, &head_hash) {
            Ok(n) => Ok(AuditVerify {
                ok: true,
                events: n,
                error: None,
            }),
            Err(err) => Ok(AuditVerify {
                ok: false,
                events: count,
                error: Some(err.to_string()),
            }),
        }
    }

    async fn recording_accessed(&self, id: SessionId, operator: &str, how: &str) -> Result<(), ControlError> {
        self.inner
            .store
            .append_audit(
                &NewAuditEvent::new(kinds::RECORDING_ACCESSED)
                    .actor(operator)
                    .session(id)
                    .details(json!({"access": how})),
            )
            .await?;
        Ok(())
    }

    /// Re-hashes a recording against its manifest (audited as `recording.accessed`).
    ///
    /// # Errors
    /// `not_found` when the session or its recording does not exist.
    pub async fn recording_verify(&self, id: &str, operator: &str) -> Result<RecordingVerify, ControlError> {
        let id = parse_session_id(id)?;
        self.require_recording(id).await?;
        self.recording_accessed(id, operator, "verify").await?;
        let root = self.inner.config.recordings_root.clone();
        let sid = id.to_string();
        let report = tokio::task::spawn_blocking(move || wg_recording::verify(&root, &sid))
            .await
            .map_err(|e| ControlError::internal(e.to_string()))??;
        Ok(RecordingVerify {
            session: id.to_string(),
            ok: report.ok,
            status: report.status,
            chunks: report.chunks,
            bytes: report.bytes,
            sha256: report.sha256,
            problems: report.problems,
        })
    }

    /// The recording stream (asciicast v2), audited as `recording.accessed`.
    ///
    /// # Errors
    /// `not_found` when the session or its recording does not exist.
    pub async fn recording_stream(&self, id: &str, operator: &str) -> Result<Vec<u8>, ControlError> {
        let id = parse_session_id(id)?;
        self.require_recording(id).await?;
        self.recording_accessed(id, operator, "play").await?;
        let root = self.inner.config.recordings_root.clone();
        let sid = id.to_string();
        Ok(tokio::task::spawn_blocking(move || wg_recording::read_stream(&root, &sid))
            .await
            .map_err(|e| ControlError::internal(e.to_string()))??)
    }

    async fn require_recording(&self, id: SessionId) -> Result<SessionRecord, ControlError> {
        let r = self
            .inner
            .store
            .get_session(id)
            .await?
            .ok_or_else(|| ControlError::not_found(format!("no session {id}")))?;
        if r.recording_mode != "full" || r.recording_status == "none" {
            return Err(ControlError::not_found(format!("session {id} has no recording")));
        }
        Ok(r)
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
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
