//! The control plane's certificate authority (`control_ca`, one row): created by the first
//! replica to start and shared by every replica on the database. The store holds the certificate
//! and the private key as vault ciphertext only; sealing and opening it is the control plane's.

use sqlx::Row;

use crate::{Result, Store, corrupt};

/// The CA as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredCa {
    /// The CA certificate (PEM).
    pub cert_pem: String,
    /// The AEAD nonce of the sealed key.
    pub key_nonce: Vec<u8>,
    /// The private key (PKCS#8 PEM) sealed under the vault master key.
    pub key_sealed: Vec<u8>,
    /// When it was created.
    pub created_ms: wg_domain::time::UnixMillis,
}

impl std::fmt::Debug for StoredCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCa")
            .field("created_ms", &self.created_ms)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// The CA, if one was created.
    pub async fn control_ca(&self) -> Result<Option<StoredCa>> {
        let row = sqlx::query(
            "SELECT cert_pem, key_nonce, key_sealed, created_ms FROM control_ca WHERE id = 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let c = |e| corrupt("control_ca", e);
            Ok(StoredCa {
                cert_pem: r.try_get("cert_pem").map_err(c)?,
                key_nonce: r.try_get("key_nonce").map_err(c)?,
                key_sealed: r.try_get("key_sealed").map_err(c)?,
                created_ms: r.try_get("created_ms").map_err(c)?,
            })
        })
        .transpose()
    }

    /// Stores `ca` unless a CA exists already, and returns the one stored: of replicas racing to
    /// create it, every one gets the winner's.
    pub async fn init_control_ca(&self, ca: &StoredCa) -> Result<StoredCa> {
        sqlx::query(
            "INSERT INTO control_ca (id, cert_pem, key_nonce, key_sealed, created_ms) \
             VALUES (1, $1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&ca.cert_pem)
        .bind(&ca.key_nonce)
        .bind(&ca.key_sealed)
        .bind(ca.created_ms)
        .execute(&self.writer)
        .await?;
        self.control_ca()
            .await?
            .ok_or_else(|| crate::StoreError::Corrupt {
                table: "control_ca",
                message: "the CA row vanished right after it was stored".into(),
            })
    }
}
