//! The gateway's side of the `wardengate.v1` protocol.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use wg_proto::v1::gateway_control_client::GatewayControlClient;
use wg_proto::v1::{
    AuthenticateActorRequest, CommandResult, CommandStreamRequest, ProgressBatch, SessionDecision,
    SessionRequest, gateway_command,
};

use crate::runtime::Runtime;

/// A cheap-to-clone client of the control plane, bound to one gateway name. With several
/// replicas, calls go to the current one; a call that finds it unreachable moves to the next
/// and, when that is safe, is sent again there (see [`ControlClient::call`]).
#[derive(Clone)]
pub struct ControlClient {
    replicas: Arc<[GatewayControlClient<Channel>]>,
    current: Arc<std::sync::atomic::AtomicUsize>,
    auth: Arc<MetadataValue<tonic::metadata::Ascii>>,
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
    /// Transport-level failure.
    #[error("control plane unreachable: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The call failed.
    #[error("{}", .0.message())]
    Status(#[from] tonic::Status),
    /// The token is not valid ASCII metadata.
    #[error("gateway token is not valid")]
    BadToken,
}

impl ControlClient {
    /// Connects to `url` (e.g. `http://127.0.0.1:8081`).
    ///
    /// # Errors
    /// [`ControlCallError`] when the endpoint is invalid or unreachable.
    pub async fn connect(url: &str, token: &str, gateway: &str) -> Result<Self, ControlCallError> {
        Self::connect_any(&[url.to_owned()], token, gateway).await
    }

    /// Connects to several control-plane replicas (calls go to any reachable one, so losing a
    /// replica fails calls over to the others). With one URL the connection is made at once, so
    /// that an unreachable control plane is reported at start.
    ///
    /// # Errors
    /// [`ControlCallError`] when an endpoint is invalid, or the single one is unreachable.
    pub async fn connect_any(
        urls: &[String],
        token: &str,
        gateway: &str,
    ) -> Result<Self, ControlCallError> {
        let endpoints = urls
            .iter()
            .map(|u| {
                Endpoint::from_shared(u.clone()).map(|e| {
                    e.connect_timeout(Duration::from_secs(5))
                        .tcp_nodelay(true)
                        .http2_keep_alive_interval(Duration::from_secs(5))
                        .keep_alive_timeout(Duration::from_secs(5))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let replicas: Vec<GatewayControlClient<Channel>> = match endpoints.as_slice() {
            [one] => vec![GatewayControlClient::new(one.connect().await?)],
            _ => endpoints
                .iter()
                .map(|e| GatewayControlClient::new(e.connect_lazy()))
                .collect(),
        };
        let auth = format!("Bearer {token}")
            .parse()
            .map_err(|_| ControlCallError::BadToken)?;
        Ok(ControlClient {
            replicas: replicas.into(),
            current: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            auth: Arc::new(auth),
            gateway: gateway.into(),
        })
    }

    /// Redeems a one-time join token at the first reachable of `urls`: returns the gateway's
    /// name, pool and credential.
    ///
    /// # Errors
    /// The last control plane's error when none accepts the token.
    pub async fn join(
        urls: &[String],
        join_token: &str,
        address: &str,
    ) -> Result<(String, String, String), ControlCallError> {
        let mut last = None;
        for url in urls {
            let attempt = async {
                let channel = Endpoint::from_shared(url.clone())?
                    .connect_timeout(Duration::from_secs(5))
                    .connect()
                    .await?;
                let resp = GatewayControlClient::new(channel)
                    .join(wg_proto::v1::JoinRequest {
                        join_token: join_token.to_owned(),
                        address: address.to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                    })
                    .await?
                    .into_inner();
                Ok::<_, ControlCallError>((resp.name, resp.pool, resp.credential))
            };
            match attempt.await {
                Ok(joined) => return Ok(joined),
                // A refusal is an answer: another replica would give the same one.
                Err(ControlCallError::Status(s)) => return Err(ControlCallError::Status(s)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(ControlCallError::BadToken))
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

    /// A client of one replica, connecting lazily (for that replica's command stream).
    ///
    /// # Errors
    /// [`ControlCallError`] when the URL or the token is malformed.
    pub fn lazy(url: &str, token: &str, gateway: &str) -> Result<Self, ControlCallError> {
        let channel = Endpoint::from_shared(url.to_owned())?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        let auth = format!("Bearer {token}")
            .parse()
            .map_err(|_| ControlCallError::BadToken)?;
        Ok(ControlClient {
            replicas: vec![GatewayControlClient::new(channel)].into(),
            current: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            auth: Arc::new(auth),
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
                    let unreachable =
                        matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown);
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
        req.metadata_mut()
            .insert("authorization", (*self.auth).clone());
        req.set_timeout(Duration::from_secs(15));
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
        req.metadata_mut()
            .insert("authorization", (*control.auth).clone());
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
pub(crate) async fn run_heartbeat(
    control: ControlClient,
    runtime: Arc<Runtime>,
    interval: Duration,
    address: String,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match control.heartbeat(runtime.session_ids(), &address).await {
            Ok(closed) => {
                for id in closed {
                    runtime.sever_closed(&id);
                }
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}
