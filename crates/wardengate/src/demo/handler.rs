//! The russh server handler: authentication and session-channel requests.
//!
//! Requests are answered synchronously from the callbacks (russh only knows
//! which request a `channel_success`/`channel_failure` answers while the
//! callback runs). The work of a running channel (relaying data, reporting
//! the exit) happens in that channel's task, see `channel.rs`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use russh::keys::PublicKey;
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure, MethodKind, MethodSet, Pty, Sig};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::channel::ChannelTask;
use super::process::{self, Kind, PtyRequest, Spec, Started};

/// Session channels one connection may have open at once (sshd's MaxSessions).
const MAX_CHANNELS: usize = 10;
/// `env` requests honoured per channel.
const MAX_ENV: usize = 64;

/// Per-connection handler.
pub(super) struct ConnHandler {
    shared: Arc<Shared>,
    peer: SocketAddr,
    local: SocketAddr,
    /// Cancelled when this handler is dropped (the connection ended).
    cancel: CancellationToken,
    alive: mpsc::Sender<()>,
    channels: HashMap<ChannelId, Slot>,
}

/// The handler's view of one session channel.
struct Slot {
    /// Hands the started child to the channel task; `None` once used.
    start: Option<oneshot::Sender<Started>>,
    /// PTY window size for the channel task. Dropping the slot closes it,
    /// which tells the task the channel is gone; the task dropping its end
    /// tells us it has finished.
    size: watch::Sender<Option<pty_process::Size>>,
    pty: Option<PtyRequest>,
    env: Vec<(String, String)>,
    /// Process group of the running child.
    pgid: Option<i32>,
}

impl Slot {
    fn finished(&self) -> bool {
        self.size.is_closed()
    }
}

impl ConnHandler {
    pub(super) fn new(
        shared: Arc<Shared>,
        peer: SocketAddr,
        local: SocketAddr,
        cancel: CancellationToken,
        alive: mpsc::Sender<()>,
    ) -> Self {
        Self {
            shared,
            peer,
            local,
            cancel,
            alive,
            channels: HashMap::new(),
        }
    }

    fn key_accepted(&self, user: &str, key: &PublicKey) -> bool {
        user == self.shared.account && key.key_data() == self.shared.authorized_key.key_data()
    }

    /// A slot whose child has not been started yet.
    fn pending_slot(&mut self, channel: ChannelId) -> Option<&mut Slot> {
        self.channels
            .get_mut(&channel)
            .filter(|slot| slot.start.is_some())
    }

    /// Handles `shell`, `exec` and `subsystem`: starts the child and hands it
    /// to the channel task.
    fn start(
        &mut self,
        channel: ChannelId,
        kind: Kind,
        session: &mut Session,
    ) -> anyhow::Result<()> {
        let (peer, local) = (self.peer, self.local);
        let shared = self.shared.clone();
        let Some(slot) = self.pending_slot(channel) else {
            // Unknown channel, or something already runs on it.
            session.channel_failure(channel)?;
            return Ok(());
        };
        let spec = Spec {
            kind: &kind,
            pty: slot.pty.as_ref(),
            env: &slot.env,
            peer,
            local,
        };
        let started = match process::spawn(&shared, &spec) {
            Ok(started) => started,
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), ?channel, "demo target: cannot start the session's program");
                // Tell the user why, like a failing sshd child would on stderr.
                let message = format!("wardengate demo target: {error:#}\r\n");
                session.extended_data(channel, 1, message.into_bytes())?;
                session.channel_failure(channel)?;
                return Ok(());
            }
        };
        let pgid = started.pgid;
        let Some(start) = slot.start.take() else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        if let Err(mut orphan) = start.send(started) {
            // The channel task is gone (the channel closed meanwhile).
            tokio::spawn(async move {
                process::terminate(orphan.pgid, &mut orphan.child, false).await;
            });
            session.channel_failure(channel)?;
            return Ok(());
        }
        slot.pgid = Some(pgid);
        tracing::debug!(
            ?channel,
            pgid,
            ?kind,
            "demo target: started the session's program"
        );
        session.channel_success(channel)?;
        Ok(())
    }
}

impl Drop for ConnHandler {
    fn drop(&mut self) {
        // The connection is gone: channel tasks terminate their children.
        self.cancel.cancel();
    }
}

fn publickey_only() -> Auth {
    let mut methods = MethodSet::empty();
    methods.push(MethodKind::PublicKey);
    Auth::Reject {
        proceed_with_methods: Some(methods),
        partial_success: false,
    }
}

fn clamp_u16(value: u32) -> u16 {
    u16::try_from(value).unwrap_or(u16::MAX)
}

fn window_size(cols: u32, rows: u32, pix_width: u32, pix_height: u32) -> pty_process::Size {
    pty_process::Size::new_with_pixel(
        clamp_u16(rows),
        clamp_u16(cols),
        clamp_u16(pix_width),
        clamp_u16(pix_height),
    )
}

impl russh::server::Handler for ConnHandler {
    type Error = anyhow::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(publickey_only())
    }

    async fn auth_password(&mut self, _user: &str, _password: &str) -> Result<Auth, Self::Error> {
        Ok(publickey_only())
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.key_accepted(user, offer.public_key) {
            Ok(Auth::Accept)
        } else {
            Ok(publickey_only())
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.key_accepted(user, key.public_key) {
            tracing::info!(peer = %self.peer, user, "demo target: session authenticated");
            Ok(Auth::Accept)
        } else {
            tracing::info!(peer = %self.peer, user, "demo target: publickey refused");
            Ok(publickey_only())
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.retain(|_, slot| !slot.finished());
        if self.channels.len() >= MAX_CHANNELS {
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        }
        let (start, start_rx) = oneshot::channel();
        let (size, size_rx) = watch::channel(None);
        let id = channel.id();
        let task = ChannelTask {
            channel,
            handle: session.handle(),
            start: start_rx,
            size: size_rx,
            cancel: self.cancel.clone(),
            alive: self.alive.clone(),
        };
        reply.accept().await;
        tokio::spawn(task.run());
        self.channels.insert(
            id,
            Slot {
                start: Some(start),
                size,
                pty: None,
                env: Vec::new(),
                pgid: None,
            },
        );
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        _modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match self.pending_slot(channel) {
            Some(slot) if slot.pty.is_none() => {
                slot.pty = Some(PtyRequest {
                    term: term.to_owned(),
                    size: window_size(col_width, row_height, pix_width, pix_height),
                });
                session.channel_success(channel)?;
            }
            _ => session.channel_failure(channel)?,
        }
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match self.pending_slot(channel) {
            Some(slot)
                if slot.env.len() < MAX_ENV
                    && process::env_accepted(variable_name, variable_value) =>
            {
                slot.env.retain(|(name, _)| name != variable_name);
                slot.env
                    .push((variable_name.to_owned(), variable_value.to_owned()));
                session.channel_success(channel)?;
            }
            _ => {
                tracing::debug!(?channel, variable_name, "demo target: env request ignored");
                session.channel_failure(channel)?;
            }
        }
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start(channel, Kind::Shell, session)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start(channel, Kind::Exec(data.to_vec()), session)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if name == "sftp" {
            self.start(channel, Kind::Sftp, session)
        } else {
            tracing::debug!(?channel, name, "demo target: unknown subsystem");
            session.channel_failure(channel)?;
            Ok(())
        }
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let size = window_size(col_width, row_height, pix_width, pix_height);
        match self.channels.get_mut(&channel) {
            Some(slot) if slot.pty.is_some() => {
                if let Some(pty) = slot.pty.as_mut() {
                    pty.size = size;
                }
                // The task applies it (TIOCSWINSZ) once the child runs.
                slot.size.send_replace(Some(size));
                session.channel_success(channel)?;
            }
            _ => session.channel_failure(channel)?,
        }
        Ok(())
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        signal: Sig,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(slot) = self.channels.get(&channel) else {
            return Ok(());
        };
        match (slot.pgid, process::signal_number(&signal)) {
            (Some(pgid), Some(number)) if !slot.finished() => {
                tracing::debug!(?channel, ?signal, pgid, "demo target: delivering a signal");
                process::signal_group(pgid, number);
            }
            _ => tracing::debug!(?channel, ?signal, "demo target: signal request ignored"),
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Dropping the slot tells the channel task to terminate its child.
        self.channels.remove(&channel);
        Ok(())
    }
}
