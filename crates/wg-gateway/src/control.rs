//! The gateway's side of the `wardengate.v1` protocol.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use wg_proto::v1::gateway_control_client::GatewayControlClient;
use wg_proto::v1::{
    AuthenticateActorRequest, CommandResult, CommandStreamRequest, ProgressBatch, SessionDecision,
    SessionRequest, gateway_command,
};

use crate::runtime::Runtime;
use crate::tls::{ControlAuth, JoinToken, PinnedCa, TlsIdentity, sha256_hex};

/// A cheap-to-clone client of the control plane, bound to one gateway name. With several
/// replicas, calls go to the current one; a call that finds it unreachable moves to the next
/// and, when that is safe, is sent again there (see [`ControlClient::call`]).
#[derive(Clone)]
pub struct ControlClient {
    replicas: Arc<[GatewayControlClient<Channel>]>,
    current: Arc<std::sync::atomic::AtomicUsize>,
    /// The `dev` gateway's bearer token (a standalone gateway authenticates with its certificate).
    auth: Option<Arc<MetadataValue<tonic::metadata::Ascii>>>,
    gateway: Arc<str>,
}

impl std::fmt::Debug for ControlClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlClient")
            .field("gateway", &self.gateway)
            .finish()
    }
}

/// An error talking to the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ControlCallError {
    /// Transport-level failure (connection, TLS handshake).
    #[error("control plane unreachable: {}", error_chain(.0))]
    Transport(#[from] tonic::transport::Error),
    /// The call failed.
    #[error("{}", .0.message())]
    Status(#[from] tonic::Status),
    /// The token is not valid ASCII metadata.
    #[error("gateway token is not valid")]
    BadToken,
    /// The configuration cannot work (a URL, the join token, the TLS identity).
    #[error("{0}")]
    Config(String),
}

/// An error with its sources, `outer: inner: …` (tonic's transport errors say little on their
/// own: the cause, e.g. a refused certificate, is in the sources).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// What a gateway receives when it joins.
pub struct Joined {
    /// Its name, e.g. `gw-us-1`.
    pub name: String,
    /// Its pool.
    pub pool: String,
    /// The CA, its certificate and the key generated for it.
    pub identity: TlsIdentity,
    /// When the certificate expires (Unix milliseconds).
    pub certificate_expires_ms: i64,
}

impl std::fmt::Debug for Joined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Joined")
            .field("name", &self.name)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

/// How long a TLS handshake with a replica may take. tonic's connect timeout covers only the
/// TCP connect: a stalled replica (its kernel still completes TCP handshakes) would otherwise
/// hold every call waiting for its connection, instead of failing over to the next replica.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The endpoint of one replica, authenticated as `auth` says.
fn endpoint(url: &str, auth: &ControlAuth) -> Result<Endpoint, ControlCallError> {
    let e = Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5));
    match auth {
        ControlAuth::Bearer(_) => Ok(e),
        ControlAuth::Mtls(id) => {
            require_https(url)?;
            Ok(e.tls_config(
                ClientTlsConfig::new()
                    .timeout(TLS_HANDSHAKE_TIMEOUT)
                    .ca_certificate(tonic::transport::Certificate::from_pem(&id.ca_pem))
                    .identity(tonic::transport::Identity::from_pem(
                        &id.cert_pem,
                        id.key_pem.as_bytes(),
                    )),
            )?)
        }
    }
}

fn require_https(url: &str) -> Result<(), ControlCallError> {
    if url.starts_with("https://") {
        Ok(())
    } else {
        Err(ControlCallError::Config(format!(
            "{url}: a standalone gateway talks to the control plane over mutual TLS; use https://"
        )))
    }
}

fn bearer(
    auth: &ControlAuth,
) -> Result<Option<Arc<MetadataValue<tonic::metadata::Ascii>>>, ControlCallError> {
    match auth {
        ControlAuth::Bearer(token) => Ok(Some(Arc::new(
            format!("Bearer {token}")
                .parse()
                .map_err(|_| ControlCallError::BadToken)?,
        ))),
        ControlAuth::Mtls(_) => Ok(None),
    }
}

impl ControlClient {
    /// Connects to `url` (e.g. `http://127.0.0.1:8081` in `dev`, `https://cp1:8443` with mutual
    /// TLS).
    ///
    /// # Errors
    /// [`ControlCallError`] when the endpoint is invalid or unreachable.
    pub async fn connect(
        url: &str,
        auth: &ControlAuth,
        gateway: &str,
    ) -> Result<Self, ControlCallError> {
        Self::connect_any(&[url.to_owned()], auth, gateway).await
    }

    /// Connects to several control-plane replicas (calls go to any reachable one, so losing a
    /// replica fails calls over to the others). With one URL the connection is made at once, so
    /// that an unreachable control plane is reported at start.
    ///
    /// # Errors
    /// [`ControlCallError`] when an endpoint is invalid, or the single one is unreachable.
    pub async fn connect_any(
        urls: &[String],
        auth: &ControlAuth,
        gateway: &str,
    ) -> Result<Self, ControlCallError> {
        let endpoints = urls
            .iter()
            .map(|u| endpoint(u, auth))
            .collect::<Result<Vec<_>, _>>()?;
        let replicas: Vec<GatewayControlClient<Channel>> = match endpoints.as_slice() {
            [one] => vec![GatewayControlClient::new(one.connect().await?)],
            _ => endpoints
                .iter()
                .map(|e| GatewayControlClient::new(e.connect_lazy()))
                .collect(),
        };
        Ok(ControlClient {
            replicas: replicas.into(),
            current: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            auth: bearer(auth)?,
            gateway: gateway.into(),
        })
    }

    /// Redeems a one-time join token (`wgj_SECRET.CA_PIN`) at the first reachable of `urls`
    /// (`https://`): authenticates the control plane by the token's CA pin, generates the
    /// gateway's key pair and sends only its public key. Returns the gateway's name, pool, and
    /// TLS identity (CA, certificate, private key).
    ///
    /// # Errors
    /// [`ControlCallError::Config`] for a malformed token or URL; the last control plane's error
    /// when none accepts the token (a control plane whose CA does not match the pin fails the
    /// TLS handshake and is told nothing).
    pub async fn join(
        urls: &[String],
        join_token: &str,
        address: &str,
    ) -> Result<Joined, ControlCallError> {
        let token: JoinToken = join_token.parse().map_err(ControlCallError::Config)?;
        let (key_pem, public_key) = crate::tls::generate_key().map_err(ControlCallError::Config)?;
        let mut last = None;
        for url in urls {
            require_https(url)?;
            let attempt = async {
                let channel = Endpoint::from_shared(url.clone())?
                    .connect_timeout(Duration::from_secs(5))
                    .tls_config_with_verifier(
                        ClientTlsConfig::new().timeout(TLS_HANDSHAKE_TIMEOUT),
                        Arc::new(PinnedCa::new(&token.ca_pin)),
                    )?
                    .connect()
                    .await?;
                let resp = GatewayControlClient::new(channel)
                    .join(wg_proto::v1::JoinRequest {
                        join_token: token.secret.clone(),
                        address: address.to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        public_key: public_key.clone(),
                    })
                    .await?
                    .into_inner();
                // The CA handed over must be the pinned one (the handshake checked the chain).
                let ca_der = rustls::pki_types::pem::PemObject::from_pem_slice(
                    resp.ca_certificate_pem.as_bytes(),
                )
                .map(|d: rustls::pki_types::CertificateDer<'static>| sha256_hex(d.as_ref()))
                .map_err(|e| ControlCallError::Config(format!("the CA certificate sent: {e}")))?;
                if ca_der != token.ca_pin {
                    return Err(ControlCallError::Config(format!(
                        "the control plane sent a CA (sha256 {ca_der}) other than the join token pins"
                    )));
                }
                Ok::<_, ControlCallError>(Joined {
                    name: resp.name,
                    pool: resp.pool,
                    identity: TlsIdentity {
                        ca_pem: resp.ca_certificate_pem,
                        cert_pem: resp.certificate_pem,
                        key_pem: key_pem.clone(),
                    },
                    certificate_expires_ms: resp.certificate_expires_ms,
                })
            };
            match attempt.await {
                Ok(joined) => return Ok(joined),
                // A refusal is an answer: another replica would give the same one.
                Err(ControlCallError::Status(s)) => return Err(ControlCallError::Status(s)),
                Err(e) => last = Some(e),
            }
        }
        Err(last
            .unwrap_or_else(|| ControlCallError::Config("no control-plane URL to join at".into())))
    }

    /// Renews the lease; returns the sessions of `live` the control plane has closed.
    ///
    /// # Errors
    /// Transport or status errors.
    pub async fn heartbeat(
        &self,
        live: Vec<String>,
        address: &str,
    ) -> Result<Vec<String>, ControlCallError> {
        let msg = wg_proto::v1::HeartbeatRequest {
            gateway: self.gateway.to_string(),
            live_sessions: live,
            address: address.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        Ok(self
            .call(true, |mut c| {
                let req = self.request(msg.clone());
                async move { c.heartbeat(req).await }
            })
            .await?
            .closed_sessions)
    }

    /// Renews this gateway's client certificate (the client must be on mutual TLS with the
    /// current one): generates a new key pair and sends only its public key. Returns the new
    /// identity (the same CA, the new certificate and key) and the certificate's expiry (Unix
    /// ms). Safe to repeat: the certificate presented stays accepted after a renewal.
    ///
    /// # Errors
    /// [`ControlCallError::Config`] when no key can be generated; transport or status errors
    /// (`unauthenticated` when the presented certificate is no longer accepted).
    pub async fn renew_certificate(
        &self,
        current: &TlsIdentity,
    ) -> Result<(TlsIdentity, i64), ControlCallError> {
        let (key_pem, public_key) = crate::tls::generate_key().map_err(ControlCallError::Config)?;
        let msg = wg_proto::v1::RenewCertificateRequest { public_key };
        let resp = self
            .call(true, |mut c| {
                let req = self.request(msg.clone());
                async move { c.renew_certificate(req).await }
            })
            .await?;
        Ok((
            TlsIdentity {
                ca_pem: current.ca_pem.clone(),
                cert_pem: resp.certificate_pem,
                key_pem,
            },
            resp.certificate_expires_ms,
        ))
    }

    /// A client of one replica, connecting lazily (for that replica's command stream).
    ///
    /// # Errors
    /// [`ControlCallError`] when the URL, the token or the TLS identity is malformed.
    pub fn lazy(url: &str, auth: &ControlAuth, gateway: &str) -> Result<Self, ControlCallError> {
        let channel = endpoint(url, auth)?.connect_lazy();
        Ok(ControlClient {
            replicas: vec![GatewayControlClient::new(channel)].into(),
            current: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            auth: bearer(auth)?,
            gateway: gateway.into(),
        })
    }

    /// The replica calls go to now, and its index.
    fn replica(&self) -> (usize, GatewayControlClient<Channel>) {
        let n = self.replicas.len().max(1);
        let i = self.current.load(std::sync::atomic::Ordering::Relaxed) % n;
        (i, self.replicas[i].clone())
    }

    /// Runs a call on the current replica. When the replica is unreachable the next one becomes
    /// current, and the call is sent again (up to twice around the replicas, backing off from
    /// 100 ms to 1 s) if that is safe: always for an `idempotent` call, otherwise only when the
    /// request never left (the connection could not be made).
    async fn call<T, F, Fut>(&self, idempotent: bool, mut f: F) -> Result<T, tonic::Status>
    where
        F: FnMut(GatewayControlClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let attempts = (2 * self.replicas.len()).max(3);
        let mut wait = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            let (i, client) = self.replica();
            match f(client).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) => {
                    // A replica that does not answer in time (stalled: it accepts connections
                    // but does nothing) counts as unreachable too, so that calls move on to
                    // the next one instead of waiting on it again.
                    let unreachable = matches!(
                        s.code(),
                        tonic::Code::Unavailable
                            | tonic::Code::Unknown
                            | tonic::Code::DeadlineExceeded
                            | tonic::Code::Cancelled
                    );
                    if unreachable && self.replicas.len() > 1 {
                        let _ = self.current.compare_exchange(
                            i,
                            (i + 1) % self.replicas.len(),
                            std::sync::atomic::Ordering::Relaxed,
                            std::sync::atomic::Ordering::Relaxed,
                        );
                    }
                    let never_sent =
                        s.code() == tonic::Code::Unavailable && s.message().contains("connect");
                    if !(unreachable && (idempotent || never_sent)) || attempt >= attempts {
                        return Err(s);
                    }
                    tracing::debug!(error = %s, attempt, "control plane call failed; trying again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(1));
                    attempt += 1;
                }
            }
        }
    }

    /// This gateway's name.
    pub fn gateway(&self) -> &str {
        &self.gateway
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if let Some(auth) = &self.auth {
            req.metadata_mut().insert("authorization", (**auth).clone());
        }
        // Every call is a few store operations on the control plane; one that takes longer is
        // from a replica in trouble, and the next replica gets the call (see `call`).
        req.set_timeout(Duration::from_secs(5));
        req
    }

    /// Authenticates an actor by public key; `login_actor` empty when the login name was malformed.
    ///
    /// # Errors
    /// Transport or status errors.
    pub async fn authenticate_actor(
        &self,
        login_actor: &str,
        public_key: &str,
    ) -> Result<Option<(String, Vec<String>)>, ControlCallError> {
        let msg = AuthenticateActorRequest {
            login_actor: login_actor.to_owned(),
            public_key: public_key.to_owned(),
        };
        let resp = self
            .call(true, |mut c| {
                let req = self.request(msg.clone());
                async move { c.authenticate_actor(req).await }
            })
            .await?;
        Ok(resp.ok.then_some((resp.actor, resp.groups)))
    }

    /// Asks for an access decision.
    ///
    /// # Errors
    /// Transport or status errors (a denial is a decision, not an error).
    pub async fn request_session(
        &self,
        mut req: SessionRequest,
    ) -> Result<SessionDecision, ControlCallError> {
        req.gateway = self.gateway.to_string();
        // Not idempotent (it creates a session): sent again only if it never left.
        Ok(self
            .call(false, |mut c| {
                let r = self.request(req.clone());
                async move { c.request_session(r).await }
            })
            .await?)
    }

    /// Delivers a batch of journaled events (ascending `seq`) of journal `journal`; returns how
    /// far the control plane applied them and the sessions it wants severed. Idempotent: the
    /// control plane skips events it already applied, so a batch may be sent again.
    ///
    /// # Errors
    /// Transport or status errors.
    pub async fn report_events(
        &self,
        journal: &str,
        events: Vec<wg_proto::v1::GatewayEvent>,
    ) -> Result<wg_proto::v1::EventAck, ControlCallError> {
        let batch = wg_proto::v1::EventBatch {
            gateway: self.gateway.to_string(),
            journal: journal.to_owned(),
            events,
        };
        Ok(self
            .call(true, |mut c| {
                let req = self.request(batch.clone());
                async move { c.report_events(req).await }
            })
            .await?)
    }

    /// Reports progress of several sessions.
    ///
    /// # Errors
    /// Transport or status errors.
    pub async fn progress(&self, mut batch: ProgressBatch) -> Result<(), ControlCallError> {
        batch.gateway = self.gateway.to_string();
        self.call(true, |mut c| {
            let req = self.request(batch.clone());
            async move { c.report_progress(req).await }
        })
        .await?;
        Ok(())
    }

    /// Reports a command's outcome.
    ///
    /// # Errors
    /// Transport or status errors.
    pub async fn complete(&self, mut result: CommandResult) -> Result<(), ControlCallError> {
        result.gateway = self.gateway.to_string();
        self.call(true, |mut c| {
            let req = self.request(result.clone());
            async move { c.complete_command(req).await }
        })
        .await?;
        Ok(())
    }
}

/// Keeps a command stream to one control-plane replica open (reconnecting with backoff) and
/// executes each command, answering the replica that sent it. A gateway holds one stream per
/// replica, so a command issued on any replica reaches it directly, and losing a replica loses
/// no route. `first_stream` is shared by the streams of this process: the first one opened tells
/// the control plane the process (re)started.
pub(crate) async fn run_command_stream(
    control: ControlClient,
    runtime: Arc<Runtime>,
    address: String,
    first_stream: Arc<std::sync::atomic::AtomicBool>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        // Exactly one stream carries the restart notice (given back if its open fails).
        let restarted = first_stream.swap(false, std::sync::atomic::Ordering::SeqCst);
        let mut req = tonic::Request::new(CommandStreamRequest {
            gateway: control.gateway.to_string(),
            address: address.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            restarted,
        });
        if let Some(auth) = &control.auth {
            req.metadata_mut().insert("authorization", (**auth).clone());
        }
        let (_, mut client) = control.replica();
        let opened = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = client.command_stream(req) => r,
        };
        match opened {
            Ok(resp) => {
                backoff = Duration::from_millis(100);
                let mut stream = resp.into_inner();
                loop {
                    let next = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        m = stream.message() => m,
                    };
                    match next {
                        Ok(Some(cmd)) => {
                            let control = control.clone();
                            let runtime = runtime.clone();
                            tokio::spawn(async move { execute(control, runtime, cmd).await });
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "command stream broke");
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                if restarted {
                    first_stream.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                tracing::warn!(error = %e, "cannot open the command stream");
                if e.code() == tonic::Code::Unauthenticated {
                    // Refused (removed, or the certificate is not valid): asking every second
                    // changes nothing; asking now and then notices a fix.
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                    }
                    continue;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        // Capped at 1 s so that a replica coming back (or a survivor's restart) is reached fast.
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

async fn execute(control: ControlClient, runtime: Arc<Runtime>, cmd: wg_proto::v1::GatewayCommand) {
    let mut result = CommandResult {
        command_id: cmd.command_id.clone(),
        ..Default::default()
    };
    match cmd.command {
        Some(gateway_command::Command::Terminate(t)) => {
            match runtime
                .terminate(&t.session_id, &t.operator, &t.reason, &t.end_reason)
                .await
            {
                Some(outcome) => {
                    result.ok = true;
                    result.seal = outcome.seal.map(|s| wg_proto::v1::RecordingProgress {
                        chunks: s.chunks,
                        bytes: s.bytes,
                        status: s.status.as_str().to_owned(),
                        sha256: s.sha256,
                    });
                    result.time_ms = outcome.time_ms;
                    result.end_reason = outcome.reason.as_str().to_owned();
                }
                None => {
                    result.error = format!("session {} is not live on this gateway", t.session_id);
                }
            }
        }
        Some(gateway_command::Command::HandOff(h)) => {
            if runtime.hand_off(&h.session_id, &h.notice) {
                result.ok = true;
                result.time_ms = wg_domain::time::now_millis();
            } else {
                result.error = format!("session {} is not live on this gateway", h.session_id);
            }
        }
        None => result.error = "empty command".into(),
    }
    if let Err(e) = control.complete(result).await {
        tracing::warn!(error = %e, "cannot report a command result");
    }
}

/// Renews the gateway's lease every `interval` and severs the sessions the control plane closed
/// while it could not hear from this gateway (a gateway declared lost never resurrects them).
///
/// The heartbeat goes to every replica at once (`replicas`: one client each), each bounded by
/// the interval: the lease is shared through the store, so one answer renews it, and a replica
/// that accepts connections but does not answer (stalled) cannot hold the lease renewal back
/// while a healthy replica watches the lease run out.
pub(crate) async fn run_heartbeat(
    replicas: Vec<ControlClient>,
    runtime: Arc<Runtime>,
    interval: Duration,
    address: String,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let wait = interval.max(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let live = runtime.session_ids();
        let answers = futures::future::join_all(replicas.iter().map(|c| {
            let live = live.clone();
            let address = address.clone();
            async move {
                match tokio::time::timeout(wait, c.heartbeat(live, &address)).await {
                    Ok(r) => r,
                    Err(_) => Err(ControlCallError::Status(tonic::Status::deadline_exceeded(
                        "heartbeat not answered in time",
                    ))),
                }
            }
        }))
        .await;
        // Any answer renews the lease; a refusal (this gateway is no longer trusted) wins over
        // a replica that is merely away.
        let mut outcome = None;
        for a in answers {
            match (&outcome, a) {
                (_, Err(ControlCallError::Status(s)))
                    if s.code() == tonic::Code::Unauthenticated =>
                {
                    outcome = Some(Err(ControlCallError::Status(s)));
                }
                (Some(Err(ControlCallError::Status(s))), _)
                    if s.code() == tonic::Code::Unauthenticated => {}
                (Some(Ok(_)), Err(_)) => {}
                (_, a) => outcome = Some(a),
            }
        }
        let Some(outcome) = outcome else { continue };
        match outcome {
            Ok(closed) => {
                for id in closed {
                    runtime.sever_closed(&id);
                }
            }
            // No longer trusted (removed, or its certificate refused): it must not go on
            // brokering. New connections are refused already (authentication needs the
            // control plane); what is live is severed.
            Err(ControlCallError::Status(s)) if s.code() == tonic::Code::Unauthenticated => {
                if !runtime.is_empty() {
                    tracing::error!(error = %s.message(), "the control plane refuses this gateway; severing its sessions");
                    runtime
                        .close_all(&format!(
                            "the control plane no longer accepts this gateway ({})",
                            s.message()
                        ))
                        .await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}
