-- An unused join token can be revoked (`wgctl gateway token revoke ID`): a token that leaked
-- or was made for a gateway that will not be built is refused from then on, before it expires.
ALTER TABLE gateway_join_tokens ADD COLUMN revoked_ms BIGINT;
ALTER TABLE gateway_join_tokens ADD COLUMN revoked_by TEXT;
