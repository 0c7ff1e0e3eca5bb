-- Ownership handoff (seed, "Ownership and handoff"): one row per offer. At most one offer per
-- session is pending (the partial unique index); accepting changes `sessions.actor` and
-- `sessions.policy` and moves the concurrency slots in the same transaction.
CREATE TABLE session_handoffs (
    id               TEXT   NOT NULL PRIMARY KEY,
    session_id       TEXT   NOT NULL,
    from_actor       TEXT   NOT NULL,
    to_principal     TEXT   NOT NULL,
    requested_by     TEXT   NOT NULL,
    reason           TEXT   NOT NULL,
    requested_ms     BIGINT NOT NULL,
    expires_ms       BIGINT NOT NULL,
    state            TEXT   NOT NULL,
    decided_ms       BIGINT,
    accepted_policy  TEXT
);

CREATE INDEX session_handoffs_session ON session_handoffs (session_id, requested_ms);
CREATE UNIQUE INDEX session_handoffs_one_pending ON session_handoffs (session_id)
    WHERE state = 'pending';
