-- Certificate renewal (`RenewCertificate`): a gateway renews its client certificate with the one
-- it has. The row keeps the new certificate as the current one and the one presented for the
-- renewal as the previous one; both are accepted, so a gateway that renewed but could not store
-- the answer (a crash, a full disk) still connects with its old certificate and renews again.
-- The previous one is forgotten as soon as the gateway shows the new one (a copy of the old key
-- then neither logs in nor renews), and at the latest by the next renewal.
ALTER TABLE gateways ADD COLUMN prev_cert_sha256 TEXT;
CREATE INDEX gateways_prev_cert ON gateways (prev_cert_sha256);
