//! Identifiers.

use std::fmt;
use std::str::FromStr;

use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// A session identifier: `sess_` followed by 12 lowercase hex characters (48 bits) drawn from the
/// operating system's CSPRNG (PRODUCT.md §3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionId([u8; 12]);

/// Error returned when a string is not a well-formed session ID.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed session ID {0:?}: expected sess_ followed by 12 lowercase hex characters")]
pub struct BadSessionId(pub String);

/// Error returned when the operating system's random source fails.
#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomUnavailable;

impl SessionId {
    /// The textual prefix of every session ID.
    pub const PREFIX: &'static str = "sess_";

    /// Draws a fresh ID from the system CSPRNG.
    ///
    /// # Errors
    /// [`RandomUnavailable`] when the OS random source fails (no fallback to a weaker source).
    pub fn generate() -> Result<Self, RandomUnavailable> {
        let mut raw = [0u8; 6];
        SystemRandom::new()
            .fill(&mut raw)
            .map_err(|_| RandomUnavailable)?;
        let mut out = [0u8; 12];
        hex::encode_to_slice(raw, &mut out).map_err(|_| RandomUnavailable)?;
        Ok(Self(out))
    }

    /// The ID as text, e.g. `sess_a91c7f20bb48`.
    pub fn as_string(&self) -> String {
        self.to_string()
    }
}

impl FromStr for SessionId {
    type Err = BadSessionId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix(Self::PREFIX)
            .ok_or_else(|| BadSessionId(s.to_owned()))?;
        let bytes = rest.as_bytes();
        if bytes.len() != 12
            || !bytes
                .iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        {
            return Err(BadSessionId(s.to_owned()));
        }
        let mut out = [0u8; 12];
        out.copy_from_slice(bytes);
        Ok(Self(out))
    }
}

impl TryFrom<String> for SessionId {
    type Error = BadSessionId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<SessionId> for String {
    fn from(id: SessionId) -> String {
        id.to_string()
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::PREFIX)?;
        // The bytes are validated lowercase hex ASCII.
        for b in self.0 {
            fmt::Write::write_char(f, char::from(b))?;
        }
        Ok(())
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Fills `buf` from the system CSPRNG.
///
/// # Errors
/// [`RandomUnavailable`] when the OS random source fails.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), RandomUnavailable> {
    SystemRandom::new().fill(buf).map_err(|_| RandomUnavailable)
}

/// A random token of `n` bytes rendered as lowercase hex (2·n characters).
///
/// # Errors
/// [`RandomUnavailable`] when the OS random source fails.
pub fn random_hex(n: usize) -> Result<String, RandomUnavailable> {
    let mut buf = vec![0u8; n];
    random_bytes(&mut buf)?;
    Ok(hex::encode(buf))
}

/// The SHA-256 (hex) under which the control plane stores a join token: that of its secret
/// part, `wgj_SECRET` of `wgj_SECRET.CA_SHA256` (the token as printed, or the secret alone).
pub fn join_token_sha256(token: &str) -> String {
    use sha2::Digest;
    let token = token.trim();
    let secret = token.split_once('.').map_or(token, |(secret, _)| secret);
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// A join token's ID as `wgctl gateway token list` shows it: the first 12 hex digits of
/// [`join_token_sha256`].
pub fn join_token_id(token_sha256: &str) -> String {
    token_sha256.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_token_is_known_by_its_secret_part() {
        let full = "wgj_0123456789abcdef.3f0b9c2d41aa";
        assert_eq!(
            join_token_sha256(full),
            join_token_sha256(" wgj_0123456789abcdef ")
        );
        assert_eq!(join_token_id(&join_token_sha256(full)).len(), 12);
    }

    #[test]
    fn generated_ids_round_trip_and_differ() {
        let a = SessionId::generate().unwrap();
        let b = SessionId::generate().unwrap();
        assert_ne!(a, b);
        let s = a.to_string();
        assert_eq!(s.len(), 17);
        assert!(s.starts_with("sess_"));
        assert_eq!(s.parse::<SessionId>().unwrap(), a);
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in [
            "",
            "sess_",
            "sess_A91C7F20BB48",
            "sess_a91c7f20bb4",
            "sess_a91c7f20bb489",
            "ses_a91c7f20bb48",
            "sess_a91c7f20bbzz",
        ] {
            assert!(bad.parse::<SessionId>().is_err(), "{bad}");
        }
        assert!("sess_a91c7f20bb48".parse::<SessionId>().is_ok());
    }
}
