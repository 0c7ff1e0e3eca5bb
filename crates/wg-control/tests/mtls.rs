//! Mutual TLS on the gateway gRPC service, end to end over a real TLS listener: a gateway joins
//! with a one-time token and its own key, then every call needs the certificate it received;
//! no certificate, another CA's certificate, a superseded certificate and a removed gateway's
//! certificate are each refused as `unauthenticated`, saying why.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use rcgen::PublicKeyData;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use wg_control::ca::{ClusterCa, GatewayPublicKey};
use wg_control::grpc::GatewayService;
use wg_control::tls::ServerTls;
use wg_control::vault::Vault;
use wg_control::{ControlConfig, ControlPlane};
use wg_proto::v1::gateway_control_client::GatewayControlClient;
use wg_proto::v1::{HeartbeatRequest, JoinRequest};
use wg_store::Store;

struct Served {
    control: ControlPlane,
    url: String,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn control_plane(dir: &std::path::Path) -> ControlPlane {
    let url = format!("sqlite://{}", dir.join("store.db").display());
    ControlPlane::new(
        Store::connect(&url).await.unwrap(),
        Vault::from_key(&[9u8; 32]).unwrap(),
        ControlConfig::new(dir.join("recordings")),
    )
}

async fn serve() -> Served {
    let dir = tempfile::tempdir().unwrap();
    let control = control_plane(dir.path()).await;
    let ca = control.cluster_ca().await.unwrap();
    let tls = ServerTls::new(ca.clone(), vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = GatewayService::new(control.clone(), None, Duration::from_secs(15))
        .with_client_certificates(ca);
    let shutdown = CancellationToken::new();
    let incoming = tls.incoming(listener, shutdown.clone());
    let stop = shutdown.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service.into_server())
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
            .await
            .unwrap();
    });
    Served {
        control,
        url: format!("https://{addr}"),
        shutdown,
        _dir: dir,
    }
}

async fn client(
    url: &str,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> GatewayControlClient<Channel> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Endpoint::from_shared(url.to_owned())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    GatewayControlClient::new(channel)
}

fn heartbeat() -> HeartbeatRequest {
    HeartbeatRequest {
        address: "127.0.0.1:2222".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn only_the_current_certificate_of_a_registered_gateway_is_accepted() {
    let s = serve().await;
    let ca = s.control.cluster_ca().await.unwrap();
    let token = s
        .control
        .create_join_token("us", Duration::from_secs(600), "admin@local")
        .await
        .unwrap();
    // The token pins the CA.
    assert!(
        token.token.ends_with(&format!(".{}", ca.pin())),
        "{}",
        token.token
    );
    assert_eq!(token.ca_sha256, ca.pin());

    // Join: the gateway sends its public key only.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let key_pem = key.serialize_pem();
    let mut anonymous = client(&s.url, ca.cert_pem(), None).await;
    let joined = anonymous
        .join(JoinRequest {
            join_token: token.token.clone(),
            address: "127.0.0.1:2222".into(),
            version: "test".into(),
            public_key: key.subject_public_key_info(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(joined.name, "gw-us-1");
    assert_eq!(joined.ca_certificate_pem, ca.cert_pem());
    assert!(joined.certificate_expires_ms > wg_domain::time::now_millis());

    // A join token is single-use.
    let again = anonymous
        .join(JoinRequest {
            join_token: token.token.clone(),
            public_key: key.subject_public_key_info(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::Unauthenticated);
    assert!(
        again.message().contains("used already"),
        "{}",
        again.message()
    );

    // With its certificate, the gateway is who the certificate says.
    let mut gw = client(
        &s.url,
        ca.cert_pem(),
        Some((&joined.certificate_pem, &key_pem)),
    )
    .await;
    gw.heartbeat(heartbeat()).await.unwrap();

    // No certificate.
    let refused = anonymous.heartbeat(heartbeat()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert!(
        refused.message().contains("no client certificate"),
        "{}",
        refused.message()
    );

    // A certificate from another CA, for the same name and key.
    let (other, _) = ClusterCa::generate().unwrap();
    let public = GatewayPublicKey::from_spki_der(&key.subject_public_key_info()).unwrap();
    let foreign = other.issue_gateway("gw-us-1", &public).unwrap();
    let mut forged = client(&s.url, ca.cert_pem(), Some((&foreign.pem, &key_pem))).await;
    let refused = forged.heartbeat(heartbeat()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert!(
        refused
            .message()
            .contains("not issued by this control plane's CA"),
        "{}",
        refused.message()
    );

    // A certificate of this CA that is not the one issued at join.
    let superseded = ca.issue_gateway("gw-us-1", &public).unwrap();
    let mut stale = client(&s.url, ca.cert_pem(), Some((&superseded.pem, &key_pem))).await;
    let refused = stale.heartbeat(heartbeat()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert!(
        refused.message().contains("not the current certificate"),
        "{}",
        refused.message()
    );

    // Removed: its certificate is refused from then on.
    s.control
        .remove_gateway("gw-us-1", "admin@local")
        .await
        .unwrap();
    let refused = gw.heartbeat(heartbeat()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert!(
        refused.message().contains("gw-us-1 was removed"),
        "{}",
        refused.message()
    );
    s.shutdown.cancel();
}

#[tokio::test]
async fn replicas_on_one_store_share_one_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        control_plane(dir.path()).await,
        control_plane(dir.path()).await,
    );
    let (x, y) = tokio::join!(a.cluster_ca(), b.cluster_ca());
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x.pin(), y.pin());
    // A restart loads the stored CA (its key opens under the master key).
    let c = control_plane(dir.path()).await;
    assert_eq!(c.cluster_ca().await.unwrap().pin(), x.pin());
    // The key is stored sealed: the database does not hold it in clear.
    let db = std::fs::read(dir.path().join("store.db")).unwrap();
    assert!(!db.windows(11).any(|w| w == b"PRIVATE KEY"));
    // Another master key cannot open it.
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let wrong = ControlPlane::new(
        Store::connect(&url).await.unwrap(),
        Vault::from_key(&[1u8; 32]).unwrap(),
        ControlConfig::new(dir.path().join("recordings")),
    );
    assert!(wrong.cluster_ca().await.is_err());
}
