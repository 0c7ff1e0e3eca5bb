-- The session list (Store::list_sessions) pages newest first. Live sessions are a small set,
-- bounded by the concurrency limits; closed ones pile up for ever and soon outnumber them a
-- hundredfold. Without these, a live list had to walk the closed history too: in created order
-- through `sessions_created` until a page of live rows turned up (the whole table for a filter
-- that matches few, e.g. protocol or gateway), or through `sessions_state` and then sort.
-- Partial indexes over live sessions only, in the list's order; they stay the size of the live
-- set whatever the history. list_sessions writes `state <> 'closed'` as a literal (not a bound
-- parameter) so that both engines can match these predicates (SQLite only matches literal
-- terms; a PostgreSQL generic plan cannot prove a parameter is 'closed').
-- * every live session (the default list and each of its filters):
CREATE INDEX sessions_live_created ON sessions (created_ms, id) WHERE state <> 'closed';
-- * one live state (state=active, state=idle…):
CREATE INDEX sessions_live_state ON sessions (state, created_ms, id) WHERE state <> 'closed';
