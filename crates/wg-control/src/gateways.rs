//! The registry of connected gateways and targeted command delivery.
//!
//! Each connected gateway holds one command stream; [`GatewayRegistry::send`] puts a command on the
//! stream of the gateway that owns a session and waits for the gateway's [`CommandResult`]. The
//! registry is a sharded concurrent map: no lock is held across I/O or across an await.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{mpsc, oneshot};
use wg_proto::v1::{CommandResult, GatewayCommand, gateway_command};

use crate::ControlError;

/// A gateway's live connection.
#[derive(Debug, Clone)]
pub struct GatewayConn {
    /// Gateway name, e.g. `gw-dev-1`.
    pub name: String,
    /// Address clients reach it on.
    pub address: String,
    /// Software version.
    pub version: String,
    /// Connection generation, so that a stale stream's cleanup does not remove a newer one.
    pub generation: u64,
    tx: mpsc::Sender<Result<GatewayCommand, tonic::Status>>,
}

/// Connected gateways and commands awaiting their result.
#[derive(Debug, Default, Clone)]
pub struct GatewayRegistry {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    gateways: DashMap<String, GatewayConn>,
    pending: DashMap<String, oneshot::Sender<CommandResult>>,
    generation: std::sync::atomic::AtomicU64,
    /// Woken whenever a gateway's stream connects.
    connected: tokio::sync::Notify,
}

/// How long a command waits for its gateway's stream when the gateway is not connected (a
/// gateway reconnects within about a second of a control-plane restart or failover).
const RECONNECT_WAIT: Duration = Duration::from_secs(3);

/// How many commands may queue for one gateway before senders wait.
const COMMAND_QUEUE: usize = 1024;

impl GatewayRegistry {
    /// Registers a gateway's command stream, replacing an older one of the same name. Returns the
    /// receiving end to stream to the gateway and the connection's generation.
    pub fn connect(
        &self,
        name: &str,
        address: &str,
        version: &str,
    ) -> (mpsc::Receiver<Result<GatewayCommand, tonic::Status>>, u64) {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let generation = self
            .inner
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        self.inner.gateways.insert(
            name.to_owned(),
            GatewayConn {
                name: name.to_owned(),
                address: address.to_owned(),
                version: version.to_owned(),
                generation,
                tx,
            },
        );
        self.inner.connected.notify_waiters();
        (rx, generation)
    }

    /// Removes a gateway if its current connection is `generation`.
    pub fn disconnect(&self, name: &str, generation: u64) {
        self.inner
            .gateways
            .remove_if(name, |_, c| c.generation == generation);
    }

    /// Cuts a gateway's command stream (it was revoked): dropping the sender ends the stream.
    pub fn kick(&self, name: &str) {
        self.inner.gateways.remove(name);
    }

    /// Ends every gateway's command stream (a replica shutting down: the gateways move to the
    /// other replicas, and the server's graceful shutdown does not wait for streams that never
    /// end on their own).
    pub fn kick_all(&self) {
        self.inner.gateways.clear();
    }

    /// The connection of a gateway, if connected.
    pub fn get(&self, name: &str) -> Option<GatewayConn> {
        self.inner.gateways.get(name).map(|c| c.clone())
    }

    /// Every connected gateway.
    pub fn list(&self) -> Vec<GatewayConn> {
        self.inner.gateways.iter().map(|c| c.clone()).collect()
    }

    /// Sends `command` to `gateway` and waits up to `timeout` for its result.
    ///
    /// # Errors
    /// `unavailable` when the gateway is not connected (within a few seconds: it may be
    /// reconnecting), its stream is gone, or it does not answer in time.
    pub async fn send(
        &self,
        gateway: &str,
        command: gateway_command::Command,
        timeout: Duration,
    ) -> Result<CommandResult, ControlError> {
        let deadline = tokio::time::Instant::now() + RECONNECT_WAIT;
        let conn = loop {
            let connected = self.inner.connected.notified();
            if let Some(conn) = self.get(gateway) {
                break conn;
            }
            if tokio::time::timeout_at(deadline, connected).await.is_err() {
                return Err(ControlError::unavailable(format!(
                    "gateway {gateway} is not connected"
                )));
            }
        };
        let command_id =
            wg_domain::ids::random_hex(8).map_err(|e| ControlError::internal(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        self.inner.pending.insert(command_id.clone(), tx);
        let _guard = PendingGuard {
            registry: self,
            id: &command_id,
        };
        let msg = GatewayCommand {
            command_id: command_id.clone(),
            command: Some(command),
        };
        conn.tx
            .send(Ok(msg))
            .await
            .map_err(|_| ControlError::unavailable(format!("gateway {gateway} disconnected")))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(_)) => Err(ControlError::unavailable(format!(
                "gateway {gateway} dropped the command"
            ))),
            Err(_) => Err(ControlError::unavailable(format!(
                "gateway {gateway} did not answer within {} s",
                timeout.as_secs()
            ))),
        }
    }

    /// Delivers a gateway's result to the waiting sender; unknown IDs are ignored (the waiter
    /// timed out).
    pub fn complete(&self, result: CommandResult) {
        if let Some((_, tx)) = self.inner.pending.remove(&result.command_id) {
            let _ = tx.send(result);
        }
    }
}

struct PendingGuard<'a> {
    registry: &'a GatewayRegistry,
    id: &'a str,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.registry.inner.pending.remove(self.id);
    }
}
