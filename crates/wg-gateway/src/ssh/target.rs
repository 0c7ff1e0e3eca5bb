//! The target leg: an SSH client connection to the target with the injected account.
//!
//! The target's host key must equal the pinned key of the target resource; with none pinned the
//! key is accepted and reported to the control plane, which records it (trust on first use).
//! AES-GCM is preferred for the target leg (hardware-accelerated on current CPUs); ChaCha20-Poly1305
//! remains acceptable.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use zeroize::Zeroizing;

/// Credentials for the target leg.
pub(crate) enum TargetCredential {
    Password(Zeroizing<String>),
    PrivateKey(Zeroizing<String>),
}

/// Why the target leg could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TargetError {
    #[error("cannot connect to {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("host key of {addr} does not match the pinned key (possible man-in-the-middle)")]
    HostKeyMismatch { addr: String },
    #[error("the pinned host key is not a valid OpenSSH public key: {0}")]
    BadPinnedKey(String),
    #[error("the account's credential is not usable: {0}")]
    BadCredential(String),
    #[error("the target refused the account {account}")]
    AuthRejected { account: String },
}

pub(crate) struct TargetHandler {
    pinned: Option<PublicKey>,
    observed: Arc<Mutex<Option<String>>>,
    mismatch: Arc<Mutex<bool>>,
}

impl client::Handler for TargetHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            return Ok(false);
        };
        if let Ok(mut o) = self.observed.lock() {
            *o = key.to_openssh().ok();
        }
        let ok = match &self.pinned {
            Some(p) => p.key_data() == key.key_data(),
            None => true,
        };
        if !ok && let Ok(mut m) = self.mismatch.lock() {
            *m = true;
        }
        Ok(ok)
    }
}

/// An established target leg.
pub(crate) struct TargetLeg {
    pub(crate) handle: client::Handle<TargetHandler>,
    /// The host key seen, when none was pinned (to be pinned by the control plane).
    pub(crate) observed_host_key: Option<String>,
}

fn client_config() -> Arc<client::Config> {
    Arc::new(client::Config {
        preferred: super::preferred(),
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 4,
        window_size: 4 * 1024 * 1024,
        ..Default::default()
    })
}

/// Opens the target leg and authenticates as `account`.
pub(crate) async fn connect(
    address: &str,
    pinned_host_key: Option<&str>,
    account: &str,
    credential: TargetCredential,
) -> Result<TargetLeg, TargetError> {
    let pinned = match pinned_host_key {
        Some(text) => Some(
            PublicKey::from_openssh(text).map_err(|e| TargetError::BadPinnedKey(e.to_string()))?,
        ),
        None => None,
    };
    let had_pin = pinned.is_some();
    let observed = Arc::new(Mutex::new(None));
    let mismatch = Arc::new(Mutex::new(false));
    let handler = TargetHandler {
        pinned,
        observed: observed.clone(),
        mismatch: mismatch.clone(),
    };
    let connect = async {
        let socket = tokio::net::TcpStream::connect(address).await?;
        socket.set_nodelay(true)?;
        client::connect_stream(client_config(), super::buffered(socket), handler).await
    };
    let mut handle = match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            if mismatch.lock().map(|m| *m).unwrap_or(false) {
                return Err(TargetError::HostKeyMismatch {
                    addr: address.to_owned(),
                });
            }
            return Err(TargetError::Connect {
                addr: address.to_owned(),
                message: e.to_string(),
            });
        }
        Err(_) => {
            return Err(TargetError::Connect {
                addr: address.to_owned(),
                message: "timed out after 10 s".into(),
            });
        }
    };
    let result = match credential {
        TargetCredential::Password(p) => handle
            .authenticate_password(account, p.as_str())
            .await
            .map_err(|e| TargetError::Connect {
                addr: address.to_owned(),
                message: e.to_string(),
            })?,
        TargetCredential::PrivateKey(pem) => {
            let key: PrivateKey = russh::keys::decode_secret_key(pem.as_str(), None)
                .map_err(|e| TargetError::BadCredential(e.to_string()))?;
            let hash = handle
                .best_supported_rsa_hash()
                .await
                .map_err(|e| TargetError::Connect {
                    addr: address.to_owned(),
                    message: e.to_string(),
                })?
                .flatten();
            handle
                .authenticate_publickey(account, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
                .await
                .map_err(|e| TargetError::Connect {
                    addr: address.to_owned(),
                    message: e.to_string(),
                })?
        }
    };
    if !result.success() {
        return Err(TargetError::AuthRejected {
            account: account.to_owned(),
        });
    }
    let observed_host_key = if had_pin {
        None
    } else {
        observed.lock().ok().and_then(|o| o.clone())
    };
    Ok(TargetLeg {
        handle,
        observed_host_key,
    })
}
