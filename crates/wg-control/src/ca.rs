//! The control plane's certificate authority (issue #3): mutual TLS between standalone gateways
//! and the control plane.
//!
//! - One CA per deployment (ECDSA P-256, valid [`CA_VALIDITY`]), created by the first control-plane
//!   replica to start and stored in the database (`control_ca`), so that every replica on one
//!   PostgreSQL shares it. Its private key is stored sealed by the vault (ChaCha20-Poly1305 under
//!   the master key, associated data [`CA_KEY_PATH`]): write access to the database alone does not
//!   yield it.
//! - Each replica issues itself a server certificate at start ([`ClusterCa::issue_server`], for its
//!   `tlsNames`) and serves the gateway gRPC over TLS, sending the CA certificate after its own.
//! - A gateway generates its key pair locally and sends only the public key when it joins; it
//!   receives a client certificate for its name ([`ClusterCa::issue_gateway`], valid
//!   [`GATEWAY_CERT_VALIDITY`]). The control plane keeps the certificate's SHA-256 so that only
//!   the current certificate of a registered, not removed, gateway is accepted.
//! - The join token carries the CA certificate's SHA-256 ([`ClusterCa::pin`]), so that the gateway
//!   authenticates the control plane before it sends anything (kubeadm's discovery hash).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber,
    SignatureAlgorithm,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use sha2::Digest;
use zeroize::Zeroizing;

use crate::ControlError;

/// How long the CA certificate is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a gateway's client certificate is valid (renewal: join again; see ARCHITECTURE.md).
pub const GATEWAY_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long a replica's server certificate is valid; it is re-issued every
/// [`SERVER_CERT_RENEWAL`] while the replica runs.
pub const SERVER_CERT_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);
/// How often a running replica re-issues its server certificate.
pub const SERVER_CERT_RENEWAL: Duration = Duration::from_secs(24 * 3600);
/// The vault path (AEAD associated data) of the CA's private key.
pub const CA_KEY_PATH: &str = "control-plane/ca.key";

/// Tolerated clock skew: certificates are valid from this long before they are issued.
const BACKDATE: Duration = Duration::from_secs(300);

/// The DER prefix of an ECDSA P-256 SubjectPublicKeyInfo (id-ecPublicKey, prime256v1), followed
/// by the 65-byte uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

fn internal(what: &str, e: impl std::fmt::Display) -> ControlError {
    ControlError::internal(format!("{what}: {e}"))
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The ring crypto provider every TLS configuration of the control plane uses.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate issued by the CA.
#[derive(Clone, Debug)]
pub struct IssuedCert {
    /// The certificate (DER).
    pub der: Vec<u8>,
    /// The certificate (PEM).
    pub pem: String,
    /// SHA-256 of the DER, hex.
    pub sha256: String,
    /// When it expires (Unix milliseconds).
    pub expires_ms: i64,
}

/// A server certificate with its freshly generated key.
pub struct ServerCert {
    /// The certificate.
    pub cert: IssuedCert,
    /// Its private key (PKCS#8 DER).
    pub key_der: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCert")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

/// A gateway's public key, as sent in its join request: an ECDSA P-256 SubjectPublicKeyInfo.
#[derive(Clone, Debug)]
pub struct GatewayPublicKey {
    point: Vec<u8>,
}

impl GatewayPublicKey {
    /// Parses a SubjectPublicKeyInfo (DER) holding an ECDSA P-256 key.
    ///
    /// # Errors
    /// `bad_request` for anything else.
    pub fn from_spki_der(spki: &[u8]) -> Result<Self, ControlError> {
        match spki.strip_prefix(&P256_SPKI_PREFIX[..]) {
            Some(point) if point.len() == 65 && point[0] == 0x04 => Ok(GatewayPublicKey {
                point: point.to_vec(),
            }),
            _ => Err(ControlError::bad_request(
                "the join request's public key must be an ECDSA P-256 SubjectPublicKeyInfo (DER)",
            )),
        }
    }
}

impl PublicKeyData for GatewayPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

/// The CA: its certificate and the key that signs with it.
pub struct ClusterCa {
    cert_der: Vec<u8>,
    cert_pem: String,
    pin: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa")
            .field("pin", &self.pin)
            .finish_non_exhaustive()
    }
}

/// `now + offset` (or `now - offset`) as the certificate time type.
fn cert_time(
    now: SystemTime,
    offset: Duration,
    later: bool,
) -> Result<time::OffsetDateTime, ControlError> {
    let t = if later {
        now.checked_add(offset)
    } else {
        now.checked_sub(offset)
    }
    .ok_or_else(|| ControlError::internal("certificate time out of range"))?;
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_err(|e| internal("the clock is before 1970", e))?
        .as_secs();
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
        .map_err(|e| internal("certificate time out of range", e))
}

fn millis(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Whether `name` looks like a DNS name: dot-separated labels of letters, digits and `-`
/// (a leading `*.` allowed).
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn not_a_name(name: &str) -> ControlError {
    ControlError::bad_request(format!("TLS name {name:?} is not a DNS name or IP address"))
}

/// A random positive 128-bit serial number.
fn serial() -> Result<SerialNumber, ControlError> {
    let mut bytes = [0u8; 16];
    wg_domain::ids::random_bytes(&mut bytes).map_err(|e| internal("random source", e))?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01; // no leading zero byte: the DER length stays fixed
    Ok(SerialNumber::from_slice(&bytes))
}

/// The CA's parameters. The distinguished name is derived from the key alone, so that the issuer
/// of a stored CA can be rebuilt from its key: it must never change for an existing key, or the
/// certificates it issues would no longer chain to the stored CA certificate.
fn ca_params(
    key: &KeyPair,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
) -> CertificateParams {
    let id = sha256_hex(&key.subject_public_key_info());
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Wardengate");
    dn.push(
        DnType::CommonName,
        format!("Wardengate cluster CA {}", id.get(..12).unwrap_or(&id)),
    );
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = not_before;
    params.not_after = not_after;
    params
}

impl ClusterCa {
    /// Creates a new CA. Returns it and its private key (PKCS#8 PEM) for sealing.
    ///
    /// # Errors
    /// `internal` when key generation or signing fails.
    pub fn generate() -> Result<(ClusterCa, Zeroizing<String>), ControlError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| internal("generating the CA key", e))?;
        let now = SystemTime::now();
        let mut params = ca_params(
            &key,
            cert_time(now, BACKDATE, false)?,
            cert_time(now, CA_VALIDITY, true)?,
        );
        params.serial_number = Some(serial()?);
        let cert = params
            .self_signed(&key)
            .map_err(|e| internal("self-signing the CA", e))?;
        let key_pem = Zeroizing::new(key.serialize_pem());
        let ca = ClusterCa::assemble(cert.der().to_vec(), cert.pem(), key)?;
        Ok((ca, key_pem))
    }

    /// Loads a stored CA: its certificate (PEM) and private key (PKCS#8 PEM). Checks that the key
    /// signs certificates that chain to the certificate.
    ///
    /// # Errors
    /// `internal` when either does not parse or they do not belong together.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<ClusterCa, ControlError> {
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| internal("the stored CA certificate does not parse", e))?;
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| internal("the stored CA key does not parse", e))?;
        let ca = ClusterCa::assemble(der.to_vec(), cert_pem.to_owned(), key)?;
        // A throwaway certificate must verify against the stored CA certificate.
        let probe = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| internal("generating a key", e))?;
        let probe_key = GatewayPublicKey::from_spki_der(&probe.subject_public_key_info())?;
        let issued = ca.issue_gateway("gw-selfcheck-0", &probe_key)?;
        ca.verify_gateway_cert(&CertificateDer::from(issued.der), &[])
            .map_err(|e| {
                ControlError::internal(format!(
                    "the stored CA key does not match the stored CA certificate: {e}"
                ))
            })?;
        Ok(ca)
    }

    fn assemble(
        cert_der: Vec<u8>,
        cert_pem: String,
        key: KeyPair,
    ) -> Result<ClusterCa, ControlError> {
        // Only the name, key identifier and key usages of the issuer's parameters are used.
        let params = ca_params(
            &key,
            time::OffsetDateTime::UNIX_EPOCH,
            time::OffsetDateTime::UNIX_EPOCH,
        );
        Ok(ClusterCa {
            pin: sha256_hex(&cert_der),
            cert_der,
            cert_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// SHA-256 of the CA certificate (DER), hex: what join tokens carry.
    pub fn pin(&self) -> &str {
        &self.pin
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate (DER).
    pub fn cert_der(&self) -> CertificateDer<'static> {
        CertificateDer::from(self.cert_der.clone())
    }

    /// Issues a gateway's client certificate: subject CN and DNS SAN = `name`, extended key usage
    /// client authentication, valid [`GATEWAY_CERT_VALIDITY`].
    ///
    /// # Errors
    /// `bad_request` when `name` is not a DNS label; `internal` when signing fails.
    pub fn issue_gateway(
        &self,
        name: &str,
        key: &GatewayPublicKey,
    ) -> Result<IssuedCert, ControlError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Wardengate gateways");
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::DnsName(name.try_into().map_err(|_| {
            ControlError::bad_request(format!("{name:?} cannot be a certificate name"))
        })?)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.sign(params, key, GATEWAY_CERT_VALIDITY)
    }

    /// Issues a server certificate for a control-plane replica, for `names` (DNS names or IP
    /// addresses), with a new key pair.
    ///
    /// # Errors
    /// `bad_request` for an empty list or a name that is neither; `internal` when signing fails.
    pub fn issue_server(&self, names: &[String]) -> Result<ServerCert, ControlError> {
        if names.is_empty() {
            return Err(ControlError::bad_request(
                "the control plane needs at least one TLS name (tlsNames)",
            ));
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| internal("generating the server key", e))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Wardengate");
        dn.push(DnType::CommonName, "Wardengate control plane");
        params.distinguished_name = dn;
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) if is_dns_name(n) => n
                    .as_str()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|_| not_a_name(n)),
                Err(_) => Err(not_a_name(n)),
            })
            .collect::<Result<_, _>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = self.sign(params, &key, SERVER_CERT_VALIDITY)?;
        Ok(ServerCert {
            cert,
            key_der: Zeroizing::new(key.serialize_der()),
        })
    }

    fn sign(
        &self,
        mut params: CertificateParams,
        key: &impl PublicKeyData,
        validity: Duration,
    ) -> Result<IssuedCert, ControlError> {
        let now = SystemTime::now();
        params.not_before = cert_time(now, BACKDATE, false)?;
        params.not_after = cert_time(now, validity, true)?;
        params.serial_number = Some(serial()?);
        params.use_authority_key_identifier_extension = true;
        let expires_ms = millis(params.not_after);
        let cert = params
            .signed_by(key, &self.issuer)
            .map_err(|e| internal("signing a certificate", e))?;
        Ok(IssuedCert {
            sha256: sha256_hex(cert.der()),
            der: cert.der().to_vec(),
            pem: cert.pem(),
            expires_ms,
        })
    }

    /// A verifier of client certificates chained to this CA (signature, validity period,
    /// extended key usage client authentication).
    ///
    /// # Errors
    /// `internal` when the CA certificate is not usable as a trust anchor.
    pub fn client_verifier(&self) -> Result<Arc<dyn ClientCertVerifier>, ControlError> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.cert_der())
            .map_err(|e| internal("the CA certificate is not a usable trust anchor", e))?;
        rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            crypto_provider(),
        )
        .build()
        .map_err(|e| internal("building the client certificate verifier", e))
    }

    /// Checks that `cert` (with `intermediates`) is a valid client certificate issued by this CA.
    ///
    /// # Errors
    /// What is wrong with it, in words for the gateway's operator.
    pub fn verify_gateway_cert(
        &self,
        cert: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), String> {
        use rustls::CertificateError as C;
        let verifier = self.client_verifier().map_err(|e| e.to_string())?;
        verifier
            .verify_client_cert(cert, intermediates, UnixTime::now())
            .map(|_| ())
            .map_err(|e| match e {
                rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
                    "it was not issued by this control plane's CA".to_owned()
                }
                rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
                    "it expired (join again with a new token)".to_owned()
                }
                rustls::Error::InvalidCertificate(
                    C::NotValidYet | C::NotValidYetContext { .. },
                ) => "it is not valid yet (check the clocks)".to_owned(),
                other => other.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn gateway_key() -> (KeyPair, GatewayPublicKey) {
        let k = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let p = GatewayPublicKey::from_spki_der(&k.subject_public_key_info()).unwrap();
        (k, p)
    }

    #[test]
    fn issued_gateway_certificates_chain_to_the_ca_only() {
        let (ca, _) = ClusterCa::generate().unwrap();
        let (other, _) = ClusterCa::generate().unwrap();
        let (_, key) = gateway_key();
        let cert = ca.issue_gateway("gw-us-1", &key).unwrap();
        let der = CertificateDer::from(cert.der.clone());
        ca.verify_gateway_cert(&der, &[]).unwrap();
        let err = other.verify_gateway_cert(&der, &[]).unwrap_err();
        assert!(
            err.contains("not issued by this control plane's CA"),
            "{err}"
        );
        assert_eq!(cert.sha256, sha256_hex(&cert.der));
        let year_ms = i64::try_from(GATEWAY_CERT_VALIDITY.as_millis()).unwrap();
        let left = cert.expires_ms - wg_domain::time::now_millis();
        assert!(left > year_ms - 60_000 && left <= year_ms, "{left}");
        // A server certificate is not a client certificate.
        let server = ca.issue_server(&["localhost".into()]).unwrap();
        assert!(
            ca.verify_gateway_cert(&CertificateDer::from(server.cert.der), &[])
                .is_err()
        );
    }

    #[test]
    fn a_stored_ca_reloads_and_keeps_issuing_chained_certificates() {
        let (ca, key_pem) = ClusterCa::generate().unwrap();
        let again = ClusterCa::load(ca.cert_pem(), &key_pem).unwrap();
        assert_eq!(again.pin(), ca.pin());
        let (_, key) = gateway_key();
        let cert = again.issue_gateway("gw-eu-3", &key).unwrap();
        ca.verify_gateway_cert(&CertificateDer::from(cert.der), &[])
            .unwrap();
        // Another CA's key does not go with this certificate.
        let (_, other_key) = ClusterCa::generate().unwrap();
        let err = ClusterCa::load(ca.cert_pem(), &other_key).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }

    #[test]
    fn the_pin_is_the_sha256_of_the_ca_certificate() {
        let (ca, _) = ClusterCa::generate().unwrap();
        let der = CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap();
        assert_eq!(ca.pin(), hex::encode(sha2::Sha256::digest(der.as_ref())));
        assert_eq!(ca.pin().len(), 64);
        let (other, _) = ClusterCa::generate().unwrap();
        assert_ne!(ca.pin(), other.pin());
    }

    #[test]
    fn only_p256_public_keys_are_accepted() {
        let (k, _) = gateway_key();
        let mut spki = k.subject_public_key_info();
        assert!(GatewayPublicKey::from_spki_der(&spki).is_ok());
        spki.push(0);
        assert!(GatewayPublicKey::from_spki_der(&spki).is_err());
        assert!(GatewayPublicKey::from_spki_der(b"").is_err());
        let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        assert!(GatewayPublicKey::from_spki_der(&ed.subject_public_key_info()).is_err());
    }

    #[test]
    fn server_certificates_name_dns_names_and_addresses() {
        let (ca, _) = ClusterCa::generate().unwrap();
        let s = ca
            .issue_server(&[
                "localhost".into(),
                "127.0.0.1".into(),
                "cp1.example.net".into(),
            ])
            .unwrap();
        assert!(!s.key_der.is_empty());
        assert!(ca.issue_server(&[]).is_err());
        assert!(ca.issue_server(&["not a name".into()]).is_err());
    }
}
