-- userapi: accounts, devices, access tokens, profiles, account data, filters,
-- push rules, user-interactive auth sessions.

CREATE TABLE accounts (
    localpart TEXT PRIMARY KEY,
    user_id TEXT NOT NULL UNIQUE,
    password_hash TEXT,
    created_ts BIGINT NOT NULL,
    is_guest BOOLEAN NOT NULL DEFAULT FALSE,
    is_admin BOOLEAN NOT NULL DEFAULT FALSE,
    deactivated BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    display_name TEXT,
    created_ts BIGINT NOT NULL,
    last_seen_ts BIGINT,
    last_seen_ip TEXT,
    PRIMARY KEY (user_id, device_id)
);

-- Only the sha256 of a token is stored: a leaked table does not leak sessions.
CREATE TABLE access_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);

CREATE TABLE profiles (
    user_id TEXT PRIMARY KEY,
    displayname TEXT,
    avatar_url TEXT
);

-- One increasing position per account-data change (global, so also increasing per user).
CREATE TABLE account_data_stream (
    stream_id {{BIGINT_PK}},
    user_id TEXT NOT NULL
);

CREATE TABLE account_data (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,  -- '' for global account data
    data_type TEXT NOT NULL,
    content {{JSON}} NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, data_type)
);
CREATE INDEX account_data_user_stream ON account_data (user_id, stream_id);

CREATE TABLE filters (
    user_id TEXT NOT NULL,
    filter_id BIGINT NOT NULL,
    filter_json {{JSON}} NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);

-- User-defined push rules; `priority` orders rules of one kind (higher first).
CREATE TABLE push_rules (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    priority {{DOUBLE}} NOT NULL,
    conditions {{JSON}},
    pattern TEXT,
    actions {{JSON}} NOT NULL,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    PRIMARY KEY (user_id, kind, rule_id)
);

-- Per-user changes to the server-default rules (NULL = unchanged).
CREATE TABLE push_rule_defaults (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    enabled BOOLEAN,
    actions {{JSON}},
    PRIMARY KEY (user_id, kind, rule_id)
);

CREATE TABLE uia_sessions (
    session_id TEXT PRIMARY KEY,
    purpose TEXT NOT NULL,
    user_id TEXT,
    created_ts BIGINT NOT NULL,
    completed {{JSON}} NOT NULL
);
