-- Mutual TLS between gateways and the control plane (issue #3).
-- The control plane's CA: one row (id = 1), inserted by the first replica to start
-- (INSERT … ON CONFLICT DO NOTHING, then read back), so every replica on one database shares it.
-- Its private key is vault ciphertext (ChaCha20-Poly1305 under the master key), never plaintext.
CREATE TABLE control_ca (
    id          SMALLINT NOT NULL PRIMARY KEY CHECK (id = 1),
    cert_pem    TEXT    NOT NULL,
    key_nonce   BYTEA   NOT NULL,
    key_sealed  BYTEA   NOT NULL,
    created_ms  BIGINT  NOT NULL
);

-- A gateway now proves its identity with the certificate it received at join: the row keeps the
-- SHA-256 of that certificate (DER), so only its current certificate is accepted, and when it
-- expires. Gateways that joined with a bearer credential (before this migration) must join again.
ALTER TABLE gateways RENAME COLUMN credential_sha256 TO cert_sha256;
ALTER TABLE gateways ADD COLUMN cert_expires_ms BIGINT;
