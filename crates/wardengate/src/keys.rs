//! Key material of `wardengate dev`: host keys and the demo target's client key, generated once
//! and kept in the data directory (OpenSSH format, mode 0600).

use std::path::Path;

use anyhow::{Context, bail};
use russh::keys::ssh_key::private::{Ed25519Keypair, Ed25519PrivateKey, KeypairData};
use russh::keys::ssh_key::{LineEnding, PrivateKey};

/// A fresh Ed25519 key from the OS CSPRNG.
///
/// # Errors
/// When the random source fails.
pub(crate) fn generate_ed25519(comment: &str) -> anyhow::Result<PrivateKey> {
    let mut seed = zeroize_bytes();
    wg_domain::ids::random_bytes(&mut seed).context("random source")?;
    let private = Ed25519PrivateKey::from_bytes(&seed);
    seed.fill(0);
    let keypair = Ed25519Keypair::from(private);
    let key =
        PrivateKey::new(KeypairData::Ed25519(keypair), comment).context("building the key")?;
    Ok(key)
}

fn zeroize_bytes() -> [u8; 32] {
    [0u8; 32]
}

/// Loads the OpenSSH private key at `path`, creating it (0600) if missing.
///
/// # Errors
/// When the file is unreadable, malformed, or cannot be created.
pub(crate) fn load_or_create(path: &Path, comment: &str) -> anyhow::Result<PrivateKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => russh::keys::decode_secret_key(&text, None)
            .with_context(|| format!("reading key {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = generate_ed25519(comment)?;
            write_private_key(path, &key)?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading key {}", path.display())),
    }
}

/// Writes `key` in OpenSSH format to a new file with mode 0600, and its public half to `PATH.pub`.
///
/// # Errors
/// When encoding or writing fails, or the file exists.
pub(crate) fn write_private_key(path: &Path, key: &PrivateKey) -> anyhow::Result<()> {
    let pem = key.to_openssh(LineEnding::LF).context("encoding the key")?;
    wg_control::vault::write_private_file(path, pem.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    let public = key
        .public_key()
        .to_openssh()
        .context("encoding the public key")?;
    std::fs::write(path.with_extension("pub"), format!("{public}\n"))
        .with_context(|| format!("writing {}.pub", path.display()))?;
    Ok(())
}

/// The OpenSSH public keys in `~/.ssh/*.pub` of the invoking user.
pub(crate) fn user_public_keys() -> Vec<String> {
    let Some(home) = std::env::var_os("HOME") else {
        return Vec::new();
    };
    let dir = Path::new(&home).join(".ssh");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut keys: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "pub"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .map(|t| t.trim().to_owned())
        .filter(|t| russh::keys::PublicKey::from_openssh(t).is_ok())
        .collect();
    keys.sort();
    keys
}

/// Reads one OpenSSH public key from `path`.
///
/// # Errors
/// When the file is unreadable or not a public key.
pub(crate) fn read_public_key(path: &Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let text = text.trim().to_owned();
    if russh::keys::PublicKey::from_openssh(&text).is_err() {
        bail!("{} is not an OpenSSH public key", path.display());
    }
    Ok(text)
}
