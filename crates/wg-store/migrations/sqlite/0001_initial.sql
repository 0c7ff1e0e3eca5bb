-- Wardengate store, initial schema (SQLite).
-- Times are INTEGER milliseconds since the Unix epoch; lists and documents are JSON text.

CREATE TABLE resources (
    kind        TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    spec        TEXT    NOT NULL,
    created_ms  INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL,
    PRIMARY KEY (kind, name)
);

CREATE TABLE vault_secrets (
    path        TEXT    NOT NULL PRIMARY KEY,
    kind        TEXT    NOT NULL,
    nonce       BLOB    NOT NULL,
    ciphertext  BLOB    NOT NULL,
    updated_ms  INTEGER NOT NULL
);

CREATE TABLE api_tokens (
    token_sha256  TEXT    NOT NULL PRIMARY KEY,
    principal     TEXT    NOT NULL,
    created_ms    INTEGER NOT NULL
);

CREATE TABLE sessions (
    id                TEXT    NOT NULL PRIMARY KEY,
    state             TEXT    NOT NULL,
    actor             TEXT    NOT NULL,
    actor_groups      TEXT    NOT NULL,
    target            TEXT    NOT NULL,
    target_address    TEXT    NOT NULL,
    protocol          TEXT    NOT NULL,
    account           TEXT,
    vault_path        TEXT,
    policy            TEXT,
    mfa               TEXT,
    gateway           TEXT    NOT NULL,
    gateway_address   TEXT,
    client_ip         TEXT,
    client_geo        TEXT,
    client_software   TEXT,
    pty_term          TEXT,
    pty_cols          INTEGER,
    pty_rows          INTEGER,
    recording_mode    TEXT    NOT NULL,
    recording_chunks  INTEGER NOT NULL,
    recording_bytes   INTEGER NOT NULL,
    recording_status  TEXT    NOT NULL,
    recording_sha256  TEXT,
    created_ms        INTEGER NOT NULL,
    opened_ms         INTEGER,
    last_input_ms     INTEGER NOT NULL,
    ended_ms          INTEGER,
    end_reason        TEXT,
    end_detail        TEXT,
    exit_status       INTEGER
);

CREATE INDEX sessions_state ON sessions (state);
CREATE INDEX sessions_actor ON sessions (actor);
CREATE INDEX sessions_target ON sessions (target);
CREATE INDEX sessions_created ON sessions (created_ms);

CREATE TABLE audit_events (
    seq           INTEGER NOT NULL PRIMARY KEY,
    time_ms       INTEGER NOT NULL,
    kind          TEXT    NOT NULL,
    actor         TEXT,
    session       TEXT,
    reason        TEXT,
    details_json  TEXT    NOT NULL,
    prev          TEXT    NOT NULL,
    hash          TEXT    NOT NULL
);

CREATE INDEX audit_events_session ON audit_events (session);
CREATE INDEX audit_events_kind ON audit_events (kind);

-- The chain head: one row, updated inside every appending transaction.
CREATE TABLE audit_head (
    id    INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    seq   INTEGER NOT NULL,
    hash  TEXT    NOT NULL
);

INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
