-- OpenID tokens (POST /user/{userId}/openid/request_token): a third party exchanges
-- one at /_matrix/federation/v1/openid/userinfo for the user's ID until it expires.
CREATE TABLE openid_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);
