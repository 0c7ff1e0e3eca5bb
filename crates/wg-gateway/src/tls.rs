//! How a gateway authenticates to the control plane, and how it authenticates the control plane.
//!
//! - A standalone gateway talks to every replica over mutual TLS (`https://`): it trusts only the
//!   control plane's CA and presents the client certificate that CA issued when it joined
//!   ([`ControlAuth::Mtls`]). Its private key was generated here and never left the gateway.
//! - Before it has a certificate, it joins with a token `wgj_SECRET.CA_PIN`: the TLS handshake of
//!   the join succeeds only if the control plane's certificate chain contains a CA certificate
//!   whose SHA-256 is `CA_PIN` and the server certificate chains to it for the URL's host
//!   ([`PinnedCa`]). A control plane with another CA never sees the token.
//! - The in-process `dev` gateway uses a bearer token over plaintext loopback
//!   ([`ControlAuth::Bearer`]).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::Digest;
use zeroize::Zeroizing;

/// How the gateway authenticates to the control plane.
#[derive(Clone)]
pub enum ControlAuth {
    /// `dev`: `authorization: Bearer TOKEN` over plaintext loopback (`http://`).
    Bearer(String),
    /// A standalone gateway: mutual TLS (`https://`) with the certificate it got when it joined.
    Mtls(Arc<TlsIdentity>),
}

impl std::fmt::Debug for ControlAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlAuth::Bearer(_) => f.write_str("ControlAuth::Bearer(<redacted>)"),
            ControlAuth::Mtls(_) => f.write_str("ControlAuth::Mtls"),
        }
    }
}

/// A gateway's TLS identity: the CA it trusts, its certificate and its private key (PEM).
pub struct TlsIdentity {
    /// The control plane's CA certificate.
    pub ca_pem: String,
    /// The gateway's client certificate.
    pub cert_pem: String,
    /// The gateway's private key (PKCS#8).
    pub key_pem: Zeroizing<String>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

/// SHA-256 of `bytes`, lowercase hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A join token as `wgctl gateway token create` prints it: `wgj_SECRET.CA_PIN`.
#[derive(Clone)]
pub struct JoinToken {
    /// `wgj_SECRET`: what the control plane redeems.
    pub secret: String,
    /// SHA-256 (hex) of the control plane's CA certificate.
    pub ca_pin: String,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_pin", &self.ca_pin)
            .finish_non_exhaustive()
    }
}

impl std::str::FromStr for JoinToken {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let Some((secret, pin)) = s.split_once('.') else {
            return Err(
                "the join token carries no CA pin (expected wgj_SECRET.CA_SHA256, as \
                 `wgctl gateway token create` prints it)"
                    .into(),
            );
        };
        if !secret.starts_with("wgj_") || secret.len() < 8 {
            return Err("the join token must start with wgj_".into());
        }
        let pin = pin.to_ascii_lowercase();
        if pin.len() != 64 || !pin.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err("the join token's CA pin must be 64 hex digits (a SHA-256)".into());
        }
        Ok(JoinToken {
            secret: secret.to_owned(),
            ca_pin: pin,
        })
    }
}

/// Accepts a server whose chain holds the CA certificate with the pinned SHA-256 and whose
/// certificate chains to that CA for the server name (see the module documentation).
#[derive(Debug)]
pub struct PinnedCa {
    pin: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl PinnedCa {
    /// A verifier pinning the CA certificate whose SHA-256 is `pin` (hex).
    pub fn new(pin: &str) -> Self {
        PinnedCa {
            pin: pin.to_ascii_lowercase(),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        }
    }

    fn mismatch(&self, found: &str) -> rustls::Error {
        rustls::Error::Other(rustls::OtherError(Arc::new(std::io::Error::other(
            format!(
                "the control plane's CA does not match the join token's pin (sha256 {}): {found}",
                self.pin
            ),
        ))))
    }
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates
            .iter()
            .find(|c| sha256_hex(c.as_ref()) == self.pin)
        else {
            let seen: Vec<String> = intermediates
                .iter()
                .map(|c| sha256_hex(c.as_ref()))
                .collect();
            return Err(self.mismatch(&if seen.is_empty() {
                "it sent no CA certificate".to_owned()
            } else {
                format!("it sent {}", seen.join(", "))
            }));
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A new ECDSA P-256 key pair for the gateway: `(private key PKCS#8 PEM, SubjectPublicKeyInfo
/// DER)`.
///
/// # Errors
/// When the key cannot be generated.
pub fn generate_key() -> Result<(Zeroizing<String>, Vec<u8>), String> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("cannot generate the gateway's key: {e}"))?;
    Ok((
        Zeroizing::new(key.serialize_pem()),
        rcgen::PublicKeyData::subject_public_key_info(&key),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn join_tokens_carry_a_ca_pin() {
        let pin = "AB".repeat(32);
        let t: JoinToken = format!(" wgj_0123456789.{pin}\n").parse().unwrap();
        assert_eq!(t.secret, "wgj_0123456789");
        assert_eq!(t.ca_pin, pin.to_ascii_lowercase());
        assert!("wgj_0123456789".parse::<JoinToken>().is_err());
        assert!(
            format!("wgj_0123456789.{}", "ab".repeat(31))
                .parse::<JoinToken>()
                .is_err()
        );
        assert!(
            format!("xyz_0123456789.{pin}")
                .parse::<JoinToken>()
                .is_err()
        );
        assert!(
            format!("wgj_0123456789.{}", "zz".repeat(32))
                .parse::<JoinToken>()
                .is_err()
        );
    }

    #[test]
    fn generated_keys_are_p256() {
        let (pem, spki) = generate_key().unwrap();
        assert!(pem.contains("PRIVATE KEY"));
        assert_eq!(spki.len(), 91);
    }
}
