-- Standalone gateways (issue #3): one row per gateway that joined, and the one-time join tokens.
-- A gateway proves its identity with a credential issued at join; only its SHA-256 is kept.
-- state: live | lost (missed its lease) | removed (revoked; its credential is refused).
CREATE TABLE gateways (
    name               TEXT   NOT NULL PRIMARY KEY,
    pool               TEXT   NOT NULL,
    credential_sha256  TEXT   NOT NULL UNIQUE,
    address            TEXT   NOT NULL,
    version            TEXT   NOT NULL,
    joined_ms          BIGINT NOT NULL,
    last_seen_ms       BIGINT NOT NULL,
    state              TEXT   NOT NULL
);

CREATE TABLE gateway_join_tokens (
    token_sha256  TEXT   NOT NULL PRIMARY KEY,
    pool          TEXT   NOT NULL,
    created_by    TEXT   NOT NULL,
    created_ms    BIGINT NOT NULL,
    expires_ms    BIGINT NOT NULL,
    used_ms       BIGINT,
    used_by       TEXT
);
