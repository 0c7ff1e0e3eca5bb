-- Session lists ordered by creation for one state, actor or target (issue #3 benchmark): the
-- single-column indexes of migration 1 found the rows but left a sort of all of them, which for
-- the closed history (a million rows) took 250 ms on SQLite for `state=closed`, and made
-- PostgreSQL walk the creation index for `state=closed&actor=…`. Composite (column, created_ms,
-- id) indexes hand the rows over already in list order, so a page stops after its last row.
-- They replace the single-column ones (a prefix serves the same lookups) and the live-only
-- (state, created_ms, id) index of migration 5, which the state index now covers.
DROP INDEX IF EXISTS sessions_state;
DROP INDEX IF EXISTS sessions_actor;
DROP INDEX IF EXISTS sessions_target;
DROP INDEX IF EXISTS sessions_live_state;
CREATE INDEX sessions_state_created ON sessions (state, created_ms, id);
CREATE INDEX sessions_actor_created ON sessions (actor, created_ms, id);
CREATE INDEX sessions_target_created ON sessions (target, created_ms, id);
