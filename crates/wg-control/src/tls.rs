//! TLS for the gateway gRPC listener of a standalone control plane.
//!
//! The listener asks every client for a certificate but does not require one (a joining gateway
//! has none yet), and accepts any certificate whose holder proves possession of its key in the
//! handshake. Whether the certificate chains to the CA, is current and belongs to a registered
//! gateway is decided per call by [`crate::grpc::GatewayService`]: a refused certificate then gets
//! a gRPC `unauthenticated` error that says why, instead of a failed handshake that says nothing.
//! Every call but `Join` is authorised that way.
//!
//! The replica's server certificate (leaf + CA certificate, so that a joining gateway finds the
//! CA it pinned) is re-issued every [`crate::ca::SERVER_CERT_RENEWAL`] while the process runs.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::ControlError;
use crate::ca::{ClusterCa, crypto_provider};

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Asks for a client certificate, accepts any whose key the client proves to hold; the chain is
/// checked per call (see the module documentation).
#[derive(Debug)]
struct RequestClientCert {
    webpki: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for RequestClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Deferred to `GatewayService::authorize`, which every call but Join goes through.
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// The replica's current server certificate, swapped on renewal.
#[derive(Debug)]
struct CurrentCert(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok().map(|c| c.clone())
    }
}

fn certified_key(ca: &ClusterCa, names: &[String]) -> Result<Arc<CertifiedKey>, ControlError> {
    let issued = ca.issue_server(names)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(issued.key_der.to_vec()));
    let signer = crypto_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| ControlError::internal(format!("loading the server key: {e}")))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![CertificateDer::from(issued.cert.der), ca.cert_der()],
        signer,
    )))
}

/// The TLS configuration of a replica's gateway listener.
#[derive(Debug, Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    current: Arc<CurrentCert>,
    ca: Arc<ClusterCa>,
    names: Arc<[String]>,
}

impl ServerTls {
    /// Issues a server certificate for `names` (DNS names or IP addresses the gateways use in
    /// their `controlUrls`) and builds the listener's configuration.
    ///
    /// # Errors
    /// `bad_request` for unusable names; `internal` when issuing or configuring fails.
    pub fn new(ca: Arc<ClusterCa>, names: Vec<String>) -> Result<ServerTls, ControlError> {
        let current = Arc::new(CurrentCert(RwLock::new(certified_key(&ca, &names)?)));
        let verifier = Arc::new(RequestClientCert {
            webpki: ca.client_verifier()?,
        });
        let mut config = rustls::ServerConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ControlError::internal(format!("TLS versions: {e}")))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(ServerTls {
            config: Arc::new(config),
            current,
            ca,
            names: names.into(),
        })
    }

    /// Re-issues the server certificate every [`crate::ca::SERVER_CERT_RENEWAL`] until
    /// `shutdown`.
    pub fn spawn_renewal(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(crate::ca::SERVER_CERT_RENEWAL) => {}
                }
                match certified_key(&this.ca, &this.names) {
                    Ok(key) => match this.current.0.write() {
                        Ok(mut slot) => {
                            *slot = key;
                            tracing::info!("renewed the gateway listener's server certificate");
                        }
                        Err(_) => tracing::error!("server certificate slot poisoned"),
                    },
                    Err(e) => tracing::error!(error = %e, "cannot renew the server certificate"),
                }
            }
        })
    }

    /// Accepts TCP connections on `listener` and completes their TLS handshakes (each in its own
    /// task, bounded by a timeout), yielding the established streams until `shutdown`. Failed
    /// handshakes are logged and dropped.
    pub fn incoming(
        &self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> impl futures::Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> + Send + 'static
    {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.clone());
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    a = listener.accept() => a,
                };
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a gateway connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send(Ok(tls)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::info!(peer = %peer, error = %e, "gateway TLS handshake failed")
                        }
                        Err(_) => tracing::info!(peer = %peer, "gateway TLS handshake timed out"),
                    }
                });
            }
        });
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|s| (s, rx)) })
    }
}
