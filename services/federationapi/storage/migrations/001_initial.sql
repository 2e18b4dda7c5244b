-- Remote servers' verify keys (from direct fetches and notaries). valid_until_ts is
-- that of the response that listed the key; expired_ts is set for old_verify_keys.
CREATE TABLE server_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    verify_key TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    expired_ts BIGINT,
    fetched_ts BIGINT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);

-- The newest self-signed key response of each server, as received: what our
-- notary endpoint relays (with our signature added).
CREATE TABLE server_key_responses (
    server_name TEXT PRIMARY KEY,
    response {{JSON}} NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    fetched_ts BIGINT NOT NULL
);

-- Inbound /send dedup: the answer we gave to (origin, txn_id).
CREATE TABLE received_transactions (
    origin TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    response {{JSON}} NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);
CREATE INDEX received_transactions_ts ON received_transactions (received_ts);

-- Outbound per-destination queue of PDUs and EDUs, in position order.
CREATE TABLE outbound_queue (
    position {{BIGINT_PK}},
    destination TEXT NOT NULL,
    kind TEXT NOT NULL,
    room_id TEXT,
    json {{JSON}} NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX outbound_queue_destination ON outbound_queue (destination, position);

-- Per-destination retry state.
CREATE TABLE destinations (
    destination TEXT PRIMARY KEY,
    retry_count INTEGER NOT NULL DEFAULT 0,
    retry_until_ts BIGINT NOT NULL DEFAULT 0,
    last_success_ts BIGINT,
    last_error TEXT
);
