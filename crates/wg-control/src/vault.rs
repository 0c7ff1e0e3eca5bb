//! The vault: account credentials encrypted at rest.
//!
//! Each secret is sealed with ChaCha20-Poly1305 (RFC 8439) under a 256-bit master key, with a
//! fresh random 96-bit nonce per write and the vault path as associated data (a ciphertext moved to
//! another path does not decrypt). The master key lives in a file (`DATA_DIR/master.key`, mode
//! 0600, created on first start) or comes from the `WARDENGATE_MASTER_KEY` environment variable
//! (base64 of 32 bytes). Plaintexts are held in [`Zeroizing`] buffers and wiped when dropped; they
//! are never logged, and no API returns them.

use std::path::Path;

use base64::Engine;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use zeroize::Zeroizing;

use crate::ControlError;

/// A decrypted secret, wiped on drop.
pub enum Secret {
    /// A password.
    Password(Zeroizing<String>),
    /// An OpenSSH private key (PEM text).
    PrivateKey(Zeroizing<String>),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Password(_) => f.write_str("Secret::Password(<redacted>)"),
            Secret::PrivateKey(_) => f.write_str("Secret::PrivateKey(<redacted>)"),
        }
    }
}

impl Secret {
    /// `password` or `private_key`.
    pub fn kind(&self) -> &'static str {
        match self {
            Secret::Password(_) => "password",
            Secret::PrivateKey(_) => "private_key",
        }
    }
}

/// The master key and the AEAD operations over it.
pub struct Vault {
    key: LessSafeKey,
    /// The audit chain key, derived from the master key (see [`Vault::chain_hasher`]).
    chain: wg_domain::audit::ChainHasher,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault(<key redacted>)")
    }
}

/// The environment variable that may carry the master key (base64, 32 bytes).
pub const MASTER_KEY_ENV: &str = "WARDENGATE_MASTER_KEY";

impl Vault {
    /// Builds a vault from 32 raw key bytes.
    ///
    /// # Errors
    /// `internal` when the key has the wrong length.
    pub fn from_key(bytes: &[u8]) -> Result<Vault, ControlError> {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, bytes)
            .map_err(|_| ControlError::internal("vault master key must be 32 bytes"))?;
        Ok(Vault {
            key: LessSafeKey::new(unbound),
            chain: wg_domain::audit::ChainHasher::keyed(bytes),
        })
    }

    /// Loads the master key from `WARDENGATE_MASTER_KEY`, else from `path`, creating the file
    /// (mode 0600, 32 random bytes, base64) when neither exists.
    ///
    /// # Errors
    /// `internal` when the key is malformed or the file cannot be read or created.
    pub fn open(path: &Path) -> Result<Vault, ControlError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        if let Ok(text) = std::env::var(MASTER_KEY_ENV) {
            let raw = Zeroizing::new(b64.decode(text.trim()).map_err(|_| {
                ControlError::internal(format!("{MASTER_KEY_ENV} is not valid base64"))
            })?);
            return Vault::from_key(&raw);
        }
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let text = Zeroizing::new(text);
                let raw = Zeroizing::new(b64.decode(text.trim()).map_err(|_| {
                    ControlError::internal(format!(
                        "master key file {} is not valid base64",
                        path.display()
                    ))
                })?);
                Vault::from_key(&raw)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut raw = Zeroizing::new([0u8; 32]);
                wg_domain::ids::random_bytes(raw.as_mut())
                    .map_err(|e| ControlError::internal(e.to_string()))?;
                let encoded = Zeroizing::new(b64.encode(raw.as_ref()));
                write_private_file(path, encoded.as_bytes()).map_err(|e| {
                    ControlError::internal(format!(
                        "cannot create master key {}: {e}",
                        path.display()
                    ))
                })?;
                Vault::from_key(raw.as_ref())
            }
            Err(e) => Err(ControlError::internal(format!(
                "cannot read master key {}: {e}",
                path.display()
            ))),
        }
    }

    /// The audit chain's hasher: HMAC-SHA-256 under a key derived from the master key, which
    /// never lives in the database, so the chain cannot be recomputed from the database alone.
    pub fn chain_hasher(&self) -> wg_domain::audit::ChainHasher {
        self.chain.clone()
    }

    /// Encrypts `plaintext` for `path`; returns `(nonce, ciphertext‖tag)`.
    ///
    /// # Errors
    /// `internal` when the random source or the cipher fails.
    pub fn seal(&self, path: &str, plaintext: &[u8]) -> Result<(Vec<u8>, Vec<u8>), ControlError> {
        let mut nonce = [0u8; 12];
        wg_domain::ids::random_bytes(&mut nonce)
            .map_err(|e| ControlError::internal(e.to_string()))?;
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(path.as_bytes()),
                &mut buf,
            )
            .map_err(|_| ControlError::internal("vault encryption failed"))?;
        Ok((nonce.to_vec(), buf))
    }

    /// Decrypts what [`Vault::seal`] encrypted for `path`.
    ///
    /// # Errors
    /// `internal` when the ciphertext was not produced for this path under this key.
    pub fn open_bytes(
        &self,
        path: &str,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ControlError> {
        let nonce: [u8; 12] = nonce
            .try_into()
            .map_err(|_| ControlError::internal("vault entry has a malformed nonce"))?;
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(path.as_bytes()),
                buf.as_mut(),
            )
            .map_err(|_| {
                ControlError::internal(format!(
                    "vault entry {path} does not decrypt under this master key"
                ))
            })?;
        Ok(Zeroizing::new(plain.to_vec()))
    }

    /// Decrypts a secret stored at `path`.
    ///
    /// # Errors
    /// `internal` when the ciphertext was not produced for this path under this key.
    pub fn open_secret(
        &self,
        path: &str,
        kind: &str,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<Secret, ControlError> {
        let plain = self.open_bytes(path, nonce, ciphertext)?;
        let text = Zeroizing::new(
            String::from_utf8(plain.to_vec())
                .map_err(|_| ControlError::internal("vault entry is not UTF-8"))?,
        );
        match kind {
            "password" => Ok(Secret::Password(text)),
            "private_key" => Ok(Secret::PrivateKey(text)),
            other => Err(ControlError::internal(format!(
                "vault entry {path} has unknown kind {other}"
            ))),
        }
    }
}

/// Writes `bytes` to a new file readable only by its owner (0600). Fails if the file exists.
///
/// # Errors
/// The I/O error.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip_and_path_binding() {
        let v = Vault::from_key(&[7u8; 32]).unwrap();
        let (n, c) = v.seal("vault/ssh/a", b"hunter2").unwrap();
        assert!(!c.windows(7).any(|w| w == b"hunter2"));
        match v.open_secret("vault/ssh/a", "password", &n, &c).unwrap() {
            Secret::Password(p) => assert_eq!(p.as_str(), "hunter2"),
            Secret::PrivateKey(_) => panic!("wrong kind"),
        }
        assert!(v.open_secret("vault/ssh/b", "password", &n, &c).is_err());
        let other = Vault::from_key(&[8u8; 32]).unwrap();
        assert!(
            other
                .open_secret("vault/ssh/a", "password", &n, &c)
                .is_err()
        );
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("master.key");
        let v1 = Vault::open(&p).unwrap();
        let (n, c) = v1.seal("x", b"s").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let v2 = Vault::open(&p).unwrap();
        assert!(v2.open_secret("x", "password", &n, &c).is_ok());
    }
}
