-- Per-gateway event journals (issue #3): a gateway numbers the events it reports (lifecycle
-- reports, gateway-decided audit events) 1, 2, 3… within a journal (identified by a random ID
-- chosen when the gateway's on-disk journal is created) and replays unacknowledged ones after an
-- outage. last_seq is the highest event applied; anything at or below it is a replay and skipped.
CREATE TABLE gateway_event_journals (
    gateway     TEXT   NOT NULL,
    journal     TEXT   NOT NULL,
    last_seq    BIGINT NOT NULL,
    updated_ms  BIGINT NOT NULL,
    PRIMARY KEY (gateway, journal)
);
