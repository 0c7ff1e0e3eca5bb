//! The gateway's side of the `wardengate.v1` protocol.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use wg_proto::v1::gateway_control_client::GatewayControlClient;
use wg_proto::v1::{
    AuthenticateActorRequest, CommandResult, CommandStreamRequest, ProgressBatch, SessionDecision,
    SessionReport, SessionRequest, gateway_command,
};

use crate::runtime::Runtime;

/// A cheap-to-clone client of the control plane, bound to one gateway name.
#[derive(Clone)]
pub struct ControlClient {
    inner: GatewayControlClient<Channel>,
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
        let channel = match endpoints.as_slice() {
            [one] => one.connect().await?,
            _ => Channel::balance_list(endpoints.into_iter()),
        };
        let auth = format!("Bearer {token}")
            .parse()
            .map_err(|_| ControlCallError::BadToken)?;
        Ok(ControlClient {
            inner: GatewayControlClient::new(channel),
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
        Ok(self
            .inner
            .clone()
            .heartbeat(self.request(wg_proto::v1::HeartbeatRequest {
                gateway: self.gateway.to_string(),
                live_sessions: live,
                address: address.to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
            }))
            .await?
            .into_inner()
            .closed_sessions)
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
        let resp = self
            .inner
            .clone()
            .authenticate_actor(self.request(AuthenticateActorRequest {
                login_actor: login_actor.to_owned(),
                public_key: public_key.to_owned(),
            }))
            .await?
            .into_inner();
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
        Ok(self
            .inner
            .clone()
            .request_session(self.request(req))
            .await?
            .into_inner())
    }

    /// Reports a lifecycle transition.
    ///
    /// # Errors
    /// Transport or status errors.
    pub async fn report(&self, mut report: SessionReport) -> Result<(), ControlCallError> {
        report.gateway = self.gateway.to_string();
        if report.time_ms == 0 {
            report.time_ms = wg_domain::time::now_millis();
        }
        self.inner
            .clone()
            .report_session(self.request(report))
            .await?;
        Ok(())
    }

    /// Reports progress of several sessions.
    ///
    /// # Errors
    /// Transport or status errors.
    pub async fn progress(&self, mut batch: ProgressBatch) -> Result<(), ControlCallError> {
        batch.gateway = self.gateway.to_string();
        self.inner
            .clone()
            .report_progress(self.request(batch))
            .await?;
        Ok(())
    }

    /// Records a session event the gateway decided (e.g. a refused port forward).
    ///
    /// # Errors
    /// Transport or status errors.
    pub async fn record_event(
        &self,
        session: &str,
        kind: &str,
        details: serde_json::Value,
    ) -> Result<(), ControlCallError> {
        self.inner
            .clone()
            .record_event(self.request(wg_proto::v1::SessionEvent {
                session_id: session.to_owned(),
                gateway: self.gateway.to_string(),
                kind: kind.to_owned(),
                details_json: details.to_string(),
            }))
            .await?;
        Ok(())
    }

    /// Reports a command's outcome.
    ///
    /// # Errors
    /// Transport or status errors.
    pub async fn complete(&self, mut result: CommandResult) -> Result<(), ControlCallError> {
        result.gateway = self.gateway.to_string();
        self.inner
            .clone()
            .complete_command(self.request(result))
            .await?;
        Ok(())
    }
}

/// Keeps the command stream open (reconnecting with backoff) and executes each command.
pub(crate) async fn run_command_stream(
    control: ControlClient,
    runtime: Arc<Runtime>,
    address: String,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    // The first stream of this process tells the control plane the process (re)started.
    let mut restarted = true;
    loop {
        let mut req = tonic::Request::new(CommandStreamRequest {
            gateway: control.gateway.to_string(),
            address: address.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            restarted,
        });
        req.metadata_mut()
            .insert("authorization", (*control.auth).clone());
        let mut client = control.inner.clone();
        let opened = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = client.command_stream(req) => r,
        };
        match opened {
            Ok(resp) => {
                backoff = Duration::from_millis(100);
                restarted = false;
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
            Err(e) => tracing::warn!(error = %e, "cannot open the command stream"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
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
