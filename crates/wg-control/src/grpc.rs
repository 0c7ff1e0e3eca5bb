//! The gateway-facing gRPC service (`wardengate.v1.GatewayControl`).
//!
//! Every call but `Join` must be authenticated:
//! - a standalone gateway connects over mutual TLS ([`crate::tls`]) with the client certificate
//!   the control plane's CA issued when it joined ([`crate::ca`]). Each call checks that the
//!   certificate chains to the CA and is within its validity, and that it is the current
//!   certificate of a registered gateway that was not removed; the gateway's identity is the one
//!   the certificate belongs to, whatever name a request claims. A refusal is `unauthenticated`
//!   and says why.
//! - in `dev` mode the in-process gateway sends `authorization: Bearer <token>` (generated at
//!   start) over plaintext loopback.
//!
//! A gateway may only report on its own sessions.

use std::pin::Pin;

use futures::Stream;
use tonic::{Request, Response, Status};
use wg_domain::api::SealInfo;
use wg_domain::audit::{NewAuditEvent, kinds};
use wg_domain::{ErrorCode, lifecycle::EndReason};
use wg_proto::v1::{
    Ack, AuthenticateActorRequest, AuthenticateActorResponse, CommandResult, CommandStreamRequest,
    Credential, EventAck, EventBatch, GatewayCommand, HeartbeatRequest, HeartbeatResponse,
    JoinRequest, JoinResponse, ProgressBatch, SessionDecision, SessionRequest, credential,
    gateway_control_server::GatewayControl, gateway_event,
};

use crate::ca::ClusterCa;
use crate::service::{JournalEvent, Report, SessionAsk};
use crate::vault::Secret;
use crate::{ControlError, ControlPlane};

/// The gRPC service.
#[derive(Clone)]
pub struct GatewayService {
    control: ControlPlane,
    dev_token: Option<String>,
    ca: Option<std::sync::Arc<ClusterCa>>,
    lease: std::time::Duration,
}

/// Who is calling.
enum Caller {
    /// The in-process `dev` gateway (its requests name it).
    Dev,
    /// A joined gateway, by name.
    Gateway(String),
}

impl Caller {
    /// The gateway a request is from: a joined gateway is who its credential says, and a
    /// request claiming another name is refused.
    fn gateway(&self, claimed: &str) -> Result<String, Status> {
        match self {
            Caller::Dev if claimed.is_empty() => {
                Err(Status::invalid_argument("gateway name is required"))
            }
            Caller::Dev => Ok(claimed.to_owned()),
            Caller::Gateway(name) if claimed.is_empty() || claimed == name => Ok(name.clone()),
            Caller::Gateway(name) => Err(Status::permission_denied(format!(
                "gateway {name} cannot speak for {claimed}"
            ))),
        }
    }
}

impl std::fmt::Debug for GatewayService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatewayService")
    }
}

impl GatewayService {
    /// A service accepting, when `dev_token` is given, the in-process `dev` gateway presenting
    /// it. Joined gateways are accepted once [`GatewayService::with_client_certificates`] names
    /// the CA. `lease` is told to gateways.
    pub fn new(
        control: ControlPlane,
        dev_token: Option<String>,
        lease: std::time::Duration,
    ) -> Self {
        GatewayService {
            control,
            dev_token,
            ca: None,
            lease,
        }
    }

    /// Accepts joined gateways by the client certificates `ca` issued them (the listener must
    /// serve TLS with [`crate::tls::ServerTls`]).
    pub fn with_client_certificates(mut self, ca: std::sync::Arc<ClusterCa>) -> Self {
        self.ca = Some(ca);
        self
    }

    /// Wraps the service for tonic's router.
    pub fn into_server(self) -> wg_proto::v1::gateway_control_server::GatewayControlServer<Self> {
        wg_proto::v1::gateway_control_server::GatewayControlServer::new(self)
    }

    async fn authorize<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        if let Some(dev) = &self.dev_token {
            let presented = req
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            if !presented.is_empty() && constant_time_eq(presented.as_bytes(), dev.as_bytes()) {
                return Ok(Caller::Dev);
            }
        }
        let Some(ca) = &self.ca else {
            return Err(Status::unauthenticated(
                "missing or invalid gateway credentials",
            ));
        };
        let certs = req.peer_certs().unwrap_or_default();
        let Some((leaf, intermediates)) = certs.split_first() else {
            return Err(Status::unauthenticated(
                "no client certificate: a gateway must connect with the certificate it received \
                 when it joined (mutual TLS)",
            ));
        };
        ca.verify_gateway_cert(leaf, intermediates)
            .map_err(|e| Status::unauthenticated(format!("client certificate refused: {e}")))?;
        // Hashed once: the lookup and the retirement of a previous certificate both use it.
        let shown = crate::ca::sha256_hex(leaf);
        match self.control.gateway_for_certificate(&shown).await {
            Ok(Some(g)) if g.state == "removed" => Err(Status::unauthenticated(format!(
                "client certificate refused: gateway {} was removed",
                g.name
            ))),
            Ok(Some(g)) => {
                // The first call with a renewed certificate retires the one it was renewed
                // with (a single write per renewal: afterwards there is none pending).
                if g.prev_cert_sha256.as_ref().is_some_and(|p| *p != shown)
                    && let Err(e) = self
                        .control
                        .forget_previous_certificate(&g.name, &shown)
                        .await
                {
                    tracing::warn!(gateway = %g.name, error = %e.0.message, "cannot retire the previous certificate");
                }
                Ok(Caller::Gateway(g.name))
            }
            Ok(None) => Err(Status::unauthenticated(
                "client certificate refused: it is not the current certificate of any \
                 registered gateway",
            )),
            Err(e) => Err(status(e)),
        }
    }
}

/// Compares secrets without leaking where they differ: both are hashed first, so the timing of
/// the comparison depends only on the digests.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::Digest;
    sha2::Sha256::digest(a) == sha2::Sha256::digest(b)
}

fn status(e: ControlError) -> Status {
    let msg = e.0.message.clone();
    match e.code() {
        ErrorCode::BadRequest => Status::invalid_argument(msg),
        ErrorCode::Unauthorized => Status::unauthenticated(msg),
        ErrorCode::Forbidden | ErrorCode::PolicyDenied => Status::permission_denied(msg),
        ErrorCode::NotFound => Status::not_found(msg),
        ErrorCode::Conflict | ErrorCode::HandoffExpired | ErrorCode::Terminated => {
            Status::failed_precondition(msg)
        }
        ErrorCode::ConcurrencyLimit => Status::resource_exhausted(msg),
        ErrorCode::Unavailable => Status::unavailable(msg),
        ErrorCode::Internal => Status::internal(msg),
    }
}

/// The seal a gateway reported (none when the recording was not sealed).
pub(crate) fn seal_of(p: Option<wg_proto::v1::RecordingProgress>) -> Option<SealInfo> {
    p.filter(|p| !p.sha256.is_empty()).map(|p| SealInfo {
        chunks: p.chunks,
        bytes: p.bytes,
        sha256: p.sha256,
        status: p.status,
    })
}

/// Reads one journaled event off the wire.
fn journal_event(event: Option<gateway_event::Event>) -> JournalEvent {
    match event {
        Some(gateway_event::Event::Report(r)) => {
            let end_reason = if r.end_reason.is_empty() {
                None
            } else {
                match r.end_reason.parse::<EndReason>() {
                    Ok(reason) => Some(reason),
                    Err(e) => return JournalEvent::Malformed(e.to_string()),
                }
            };
            JournalEvent::Report(Report {
                session: r.session_id,
                state: r.state,
                time_ms: if r.time_ms > 0 {
                    r.time_ms
                } else {
                    wg_domain::time::now_millis()
                },
                end_reason,
                end_detail: nonempty(r.end_detail),
                exit_status: r.has_exit_status.then_some(r.exit_status),
                recording: seal_of(r.recording),
                observed_host_key: nonempty(r.observed_host_key),
                pty: r.pty.map(|p| (p.term, p.cols, p.rows)),
            })
        }
        Some(gateway_event::Event::Audit(a)) => JournalEvent::Audit {
            session: a.session_id,
            kind: a.kind,
            details_json: a.details_json,
        },
        None => JournalEvent::Malformed("empty journal event".into()),
    }
}

fn nonempty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

type CommandStream = Pin<Box<dyn Stream<Item = Result<GatewayCommand, Status>> + Send>>;

#[tonic::async_trait]
impl GatewayControl for GatewayService {
    type CommandStreamStream = CommandStream;

    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let req = request.into_inner();
        let joined = self
            .control
            .join_gateway(&req.join_token, &req.public_key, &req.address, &req.version)
            .await
            .map_err(status)?;
        tracing::info!(gateway = %joined.name, pool = %joined.pool, address = %req.address, "gateway joined");
        Ok(Response::new(JoinResponse {
            name: joined.name,
            pool: joined.pool,
            certificate_pem: joined.certificate_pem,
            ca_certificate_pem: joined.ca_pem,
            certificate_expires_ms: joined.certificate_expires_ms,
        }))
    }

    async fn renew_certificate(
        &self,
        request: Request<wg_proto::v1::RenewCertificateRequest>,
    ) -> Result<Response<wg_proto::v1::RenewCertificateResponse>, Status> {
        let Caller::Gateway(name) = self.authorize(&request).await? else {
            return Err(Status::failed_precondition(
                "the in-process dev gateway has no certificate to renew",
            ));
        };
        // `authorize` accepted the leaf certificate, so there is one.
        let presented = request
            .peer_certs()
            .and_then(|c| c.first().map(|c| crate::ca::sha256_hex(c.as_ref())))
            .unwrap_or_default();
        let req = request.into_inner();
        let (certificate_pem, certificate_expires_ms) = self
            .control
            .renew_gateway_certificate(&name, &presented, &req.public_key)
            .await
            .map_err(status)?;
        tracing::info!(gateway = %name, expires = %wg_domain::time::rfc3339(certificate_expires_ms), "gateway certificate renewed");
        Ok(Response::new(wg_proto::v1::RenewCertificateResponse {
            certificate_pem,
            certificate_expires_ms,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let caller = self.authorize(&request).await?;
        let req = request.into_inner();
        let closed_sessions = match &caller {
            Caller::Gateway(name) => self
                .control
                .heartbeat(
                    name,
                    &req.live_sessions,
                    nonempty(req.address).as_deref(),
                    nonempty(req.version).as_deref(),
                )
                .await
                .map_err(status)?,
            // The dev gateway lives in the control plane's process: no lease to renew.
            Caller::Dev => Vec::new(),
        };
        Ok(Response::new(HeartbeatResponse {
            closed_sessions,
            lease_ms: u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX),
        }))
    }

    async fn command_stream(
        &self,
        request: Request<CommandStreamRequest>,
    ) -> Result<Response<Self::CommandStreamStream>, Status> {
        let caller = self.authorize(&request).await?;
        let mut req = request.into_inner();
        req.gateway = caller.gateway(&req.gateway)?;
        if let Caller::Gateway(name) = &caller {
            self.control
                .heartbeat(name, &[], Some(&req.address), Some(&req.version))
                .await
                .map_err(status)?;
            if req.restarted {
                // The process restarted: what the control plane still has open on it is gone.
                let n = self
                    .control
                    .reconcile_gateway_restart(name)
                    .await
                    .map_err(status)?;
                if n > 0 {
                    tracing::warn!(gateway = %name, sessions = n, "closed sessions of a restarted gateway");
                }
            }
        }
        let registry = self.control.gateways().clone();
        let (rx, generation) = registry.connect(&req.gateway, &req.address, &req.version);
        let _ = self
            .control
            .store()
            .append_audit(
                // A joined gateway's join is its own event; the in-process dev gateway has no
                // join, so its stream is how it joins.
                &NewAuditEvent::new(match caller {
                    Caller::Dev => kinds::GATEWAY_JOINED,
                    Caller::Gateway(_) => kinds::GATEWAY_CONNECTED,
                })
                .actor(format!("gateway:{}", req.gateway))
                .details(serde_json::json!({
                    "address": req.address, "version": req.version, "restarted": req.restarted,
                })),
            )
            .await;
        tracing::info!(gateway = %req.gateway, address = %req.address, "gateway connected");
        let name = req.gateway.clone();
        // Unregister when the stream is dropped (the gateway went away).
        let stream = futures::stream::unfold(
            (
                rx,
                Some(DisconnectGuard {
                    registry,
                    name,
                    generation,
                }),
            ),
            |(mut rx, guard)| async move { rx.recv().await.map(|item| (item, (rx, guard))) },
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn complete_command(
        &self,
        request: Request<CommandResult>,
    ) -> Result<Response<Ack>, Status> {
        self.authorize(&request).await?;
        self.control.gateways().complete(request.into_inner());
        Ok(Response::new(Ack {}))
    }

    async fn authenticate_actor(
        &self,
        request: Request<AuthenticateActorRequest>,
    ) -> Result<Response<AuthenticateActorResponse>, Status> {
        self.authorize(&request).await?;
        let req = request.into_inner();
        let login = nonempty(req.login_actor);
        let found = self
            .control
            .authenticate_actor(login.as_deref(), &req.public_key)
            .await
            .map_err(status)?;
        Ok(Response::new(match found {
            Some((actor, groups)) => AuthenticateActorResponse {
                ok: true,
                actor,
                groups,
            },
            None => AuthenticateActorResponse::default(),
        }))
    }

    async fn request_session(
        &self,
        request: Request<SessionRequest>,
    ) -> Result<Response<SessionDecision>, Status> {
        let caller = self.authorize(&request).await?;
        let req = request.into_inner();
        let gateway = caller.gateway(&req.gateway)?;
        let gateway_address = self.control.gateways().get(&gateway).map(|g| g.address);
        let ask = SessionAsk {
            gateway,
            gateway_address,
            actor: req.actor,
            target: req.target,
            account: nonempty(req.account),
            protocol: req.protocol,
            client_ip: nonempty(req.client_ip),
            client_software: nonempty(req.client_software),
            gateway_max_active: (req.gateway_max_active > 0).then_some(req.gateway_max_active),
            interactive: req.interactive,
        };
        if req.may_defer && self.control.could_join(&ask).await.map_err(status)? {
            return Ok(Response::new(SessionDecision {
                deferred: true,
                ..Default::default()
            }));
        }
        let decision = match self.control.request_session(ask).await {
            Ok(a) => {
                let secret = a.credential.as_ref().map(|c| match c {
                    Secret::Password(p) => credential::Secret::Password(p.to_string()),
                    Secret::PrivateKey(k) => credential::Secret::PrivateKey(k.to_string()),
                });
                SessionDecision {
                    allowed: true,
                    session_id: a.session.to_string(),
                    target_address: a.target_address,
                    host_key: a.host_key.unwrap_or_default(),
                    account: a.account,
                    credential: secret.map(|s| Credential { secret: Some(s) }),
                    recording_mode: a.recording_mode,
                    idle_timeout_ms: u64::try_from(a.idle_timeout.as_millis()).unwrap_or(u64::MAX),
                    idle_grace_ms: u64::try_from(a.idle_grace.as_millis()).unwrap_or(u64::MAX),
                    policy: a.policy,
                    target: a.target,
                    forward_local: a.forward_local,
                    attach: a.attach,
                    reconnect_mode: a.reconnect.mode.as_str().to_owned(),
                    reconnect_grace_ms: u64::try_from(a.reconnect.grace.as_millis())
                        .unwrap_or(u64::MAX),
                    owner: a.owner,
                    ..Default::default()
                }
            }
            Err(d) => SessionDecision {
                allowed: false,
                session_id: d.session.map(|s| s.to_string()).unwrap_or_default(),
                error_code: d.error.code().as_str().to_owned(),
                message: d.error.0.message.clone(),
                scope: d.error.0.scope.clone().unwrap_or_default(),
                limit: d.error.0.limit.unwrap_or(0),
                ..Default::default()
            },
        };
        Ok(Response::new(decision))
    }

    async fn report_events(
        &self,
        request: Request<EventBatch>,
    ) -> Result<Response<EventAck>, Status> {
        let caller = self.authorize(&request).await?;
        let batch = request.into_inner();
        let gateway = caller.gateway(&batch.gateway)?;
        let events = batch
            .events
            .into_iter()
            .map(|e| (e.seq, journal_event(e.event)))
            .collect();
        let ack = self
            .control
            .apply_journal(&gateway, &batch.journal, events)
            .await
            .map_err(status)?;
        Ok(Response::new(EventAck {
            applied_through: ack.applied_through,
            sever: ack.sever,
        }))
    }

    async fn report_progress(
        &self,
        request: Request<ProgressBatch>,
    ) -> Result<Response<Ack>, Status> {
        self.authorize(&request).await?;
        let batch = request.into_inner();
        let items = batch
            .sessions
            .into_iter()
            .map(|s| crate::service::ProgressItem {
                session: s.session_id,
                last_input_ms: (s.last_input_ms > 0).then_some(s.last_input_ms),
                pty: s.pty.map(|p| (p.term, p.cols, p.rows)),
                recording: s.recording.map(|r| (r.chunks, r.bytes)),
            })
            .collect();
        self.control.progress(items).await.map_err(status)?;
        Ok(Response::new(Ack {}))
    }
}

struct DisconnectGuard {
    registry: crate::gateways::GatewayRegistry,
    name: String,
    generation: u64,
}

impl Drop for DisconnectGuard {
    fn drop(&mut self) {
        tracing::info!(gateway = %self.name, "gateway command stream closed");
        self.registry.disconnect(&self.name, self.generation);
    }
}
