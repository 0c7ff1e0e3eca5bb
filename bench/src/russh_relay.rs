//! `wg-bench russh-relay`: the smallest SSH relay that can be built on russh, as a peer in the
//! keystroke-latency comparison of `bench/ssh_throughput.sh` (path (f)).
//!
//! It is what the gateway's data path would be with nothing of Wardengate in it: a russh server
//! that accepts any public key, and per session channel a russh client connection to one fixed
//! target, opened when the channel opens. Bytes are forwarded inside the russh handler
//! callbacks themselves (client data → the target channel, target data → the client's session
//! handle): no relay task, no recording, no policy, no screen model. Like the gateway's
//! connections, it runs on one current-thread tokio runtime (see `main`), both legs read through a
//! [`READ_BUFFER_BYTES`] buffer, and the client leg offers the gateway's AES ciphers, so the
//! client negotiates the same aes256-ctr. What it adds over direct ssh is therefore the floor of
//! any russh-based relay on the machine; the gateway's figure above it is Wardengate's own cost.
//!
//! The cipher lists are the gateway's on a CPU with AES instructions (the bench machines'); on
//! one without, the gateway offers ChaCha20-Poly1305 first and this peer would not match.
//!
//! Benchmark only: it accepts every key and does not check the target's host key. It listens on
//! the loopback address it is given.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use russh::keys::PrivateKeyWithHashAlg;
use russh::server::{self, Auth, Msg, Session};
use russh::{Channel, ChannelId, ChannelWriteHalf, client};

/// Read buffer in front of each leg's socket, in bytes (as the gateway's).
const READ_BUFFER_BYTES: usize = 4096;

/// Arguments of `wg-bench russh-relay`.
#[derive(Debug, clap::Args)]
pub(crate) struct RusshRelayArgs {
    /// Address to listen on (loopback).
    #[arg(long)]
    listen: SocketAddr,
    /// The target sshd.
    #[arg(long)]
    target: SocketAddr,
    /// Account on the target.
    #[arg(long)]
    user: String,
    /// OpenSSH private key for the target account.
    #[arg(long)]
    identity: PathBuf,
    /// OpenSSH private key presented as the relay's host key.
    #[arg(long)]
    host_key: PathBuf,
}

/// Serves until killed (on the caller's runtime: `main` gives it a current-thread one).
///
/// # Errors
/// Unreadable keys, or a listen address that cannot be bound.
pub(crate) async fn run(args: RusshRelayArgs) -> anyhow::Result<()> {
    let host_key = russh::keys::load_secret_key(&args.host_key, None)
        .with_context(|| format!("reading {}", args.host_key.display()))?;
    let identity = russh::keys::load_secret_key(&args.identity, None)
        .with_context(|| format!("reading {}", args.identity.display()))?;
    let config = Arc::new(server::Config {
        methods: russh::MethodSet::from(&[russh::MethodKind::PublicKey][..]),
        keys: vec![host_key],
        preferred: russh::Preferred {
            cipher: std::borrow::Cow::Borrowed(&[
                russh::cipher::AES_128_GCM,
                russh::cipher::AES_256_GCM,
                russh::cipher::AES_256_CTR,
            ]),
            ..Default::default()
        },
        window_size: 4 * 1024 * 1024,
        nodelay: true,
        ..Default::default()
    });
    let target = Arc::new(Target {
        addr: args.target,
        user: args.user,
        identity: Arc::new(identity),
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    loop {
        let (stream, _) = listener.accept().await.context("accepting")?;
        stream.set_nodelay(true)?;
        let handler = ClientSide {
            target: target.clone(),
            legs: Vec::new(),
        };
        let config = config.clone();
        tokio::spawn(async move {
            let buffered = tokio::io::BufReader::with_capacity(READ_BUFFER_BYTES, stream);
            if let Ok(running) = server::run_stream(config, buffered, handler).await {
                let _ = running.await;
            }
        });
    }
}

/// Where and as whom the target leg logs in.
struct Target {
    addr: SocketAddr,
    user: String,
    identity: Arc<russh::keys::PrivateKey>,
}

/// The client connection's handler: holds the target channel of each client channel.
struct ClientSide {
    target: Arc<Target>,
    legs: Vec<(
        ChannelId,
        ChannelWriteHalf<client::Msg>,
        client::Handle<TargetSide>,
    )>,
}

impl ClientSide {
    fn leg(&self, channel: ChannelId) -> Option<&ChannelWriteHalf<client::Msg>> {
        self.legs
            .iter()
            .find(|(id, _, _)| *id == channel)
            .map(|(_, tx, _)| tx)
    }

    /// Opens the target leg of client channel `channel`.
    async fn open(
        &self,
        channel: ChannelId,
        server: server::Handle,
    ) -> anyhow::Result<(ChannelWriteHalf<client::Msg>, client::Handle<TargetSide>)> {
        let socket = tokio::net::TcpStream::connect(self.target.addr).await?;
        socket.set_nodelay(true)?;
        // The gateway's target-leg order: AES-GCM first.
        let config = Arc::new(client::Config {
            window_size: 4 * 1024 * 1024,
            preferred: russh::Preferred {
                cipher: std::borrow::Cow::Borrowed(&[
                    russh::cipher::AES_128_GCM,
                    russh::cipher::AES_256_GCM,
                    russh::cipher::CHACHA20_POLY1305,
                    russh::cipher::AES_256_CTR,
                ]),
                ..Default::default()
            },
            ..Default::default()
        });
        let buffered = tokio::io::BufReader::with_capacity(READ_BUFFER_BYTES, socket);
        let side = TargetSide { server, channel };
        let mut handle = client::connect_stream(config, buffered, side).await?;
        let auth = handle
            .authenticate_publickey(
                &self.target.user,
                PrivateKeyWithHashAlg::new(self.target.identity.clone(), None),
            )
            .await?;
        anyhow::ensure!(auth.success(), "the target refused the key");
        let (_, tx) = handle.channel_open_session().await?.split();
        Ok((tx, handle))
    }
}

impl server::Handler for ClientSide {
    type Error = anyhow::Error;

    async fn auth_publickey(
        &mut self,
        _user: &str,
        _key: server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: server::ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Forwarding happens in the callbacks below; the channel's own queue is not read
        // (russh drops what it would put there once the receiver is gone).
        let id = channel.id();
        drop(channel);
        let opened = tokio::time::timeout(Duration::from_secs(10), self.open(id, session.handle()))
            .await
            .map_err(|_| anyhow::anyhow!("the target did not answer in 10 s"))
            .and_then(|r| r);
        match opened {
            Ok((tx, handle)) => {
                self.legs.push((id, tx, handle));
                reply.accept().await;
            }
            Err(e) => {
                eprintln!("russh-relay: {e:#}");
                reply.reject(russh::ChannelOpenFailure::ConnectFailed).await;
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        cols: u32,
        rows: u32,
        pix_width: u32,
        pix_height: u32,
        modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(tx) = self.leg(channel) {
            tx.request_pty(false, term, cols, rows, pix_width, pix_height, modes)
                .await?;
        }
        session.channel_success(channel)?;
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(tx) = self.leg(channel) {
            tx.request_shell(false).await?;
        }
        session.channel_success(channel)?;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        command: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(tx) = self.leg(channel) {
            tx.exec(false, command.to_vec()).await?;
        }
        session.channel_success(channel)?;
        Ok(())
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        cols: u32,
        rows: u32,
        pix_width: u32,
        pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(tx) = self.leg(channel) {
            tx.window_change(cols, rows, pix_width, pix_height).await?;
        }
        Ok(())
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(tx) = self.leg(channel) {
            tx.data_bytes(data.to_vec()).await?;
        }
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(tx) = self.leg(channel) {
            tx.eof().await?;
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(tx) = self.leg(channel) {
            let _ = tx.close().await;
        }
        self.legs.retain(|(id, _, _)| *id != channel);
        Ok(())
    }
}

/// The target connection's handler: forwards what the target sends to the client channel.
struct TargetSide {
    server: server::Handle,
    channel: ChannelId,
}

impl client::Handler for TargetSide {
    type Error = anyhow::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }

    async fn data(
        &mut self,
        _channel: ChannelId,
        data: &[u8],
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        self.server
            .data(self.channel, data.to_vec())
            .await
            .map_err(|_| anyhow::anyhow!("the client is gone"))
    }

    async fn exit_status(
        &mut self,
        _channel: ChannelId,
        status: u32,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let _ = self.server.exit_status_request(self.channel, status).await;
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        _channel: ChannelId,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let _ = self.server.eof(self.channel).await;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        _channel: ChannelId,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let _ = self.server.close(self.channel).await;
        Ok(())
    }
}
