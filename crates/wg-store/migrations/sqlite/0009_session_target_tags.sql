-- The target's tags as they were when the session was requested (JSON object of strings), so
-- that `wgctl session terminate --target-tag k=v` still finds the sessions of a target that has
-- since been re-tagged or deleted. Sessions from before this migration have '{}'; the selector
-- also matches the target's current tags, which covers them.
ALTER TABLE sessions ADD COLUMN target_tags TEXT NOT NULL DEFAULT '{}';
