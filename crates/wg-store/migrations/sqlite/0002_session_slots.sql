-- Concurrency slots (PRODUCT.md §4): one counter per (scope, key), taken atomically with the
-- approval of a session and released in the transaction that moves it to closing or closed.
CREATE TABLE slot_counters (
    scope  TEXT   NOT NULL,
    key    TEXT   NOT NULL,
    used   BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE TABLE session_slots (
    session_id  TEXT NOT NULL,
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    PRIMARY KEY (session_id, scope)
);
