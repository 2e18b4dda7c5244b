-- The roomserver's schema. Strings that repeat (event types, state keys, room IDs)
-- are interned to numeric IDs ("nids"); state is stored as snapshots that are a
-- parent snapshot plus a small delta (see services/roomserver/state.py).

CREATE TABLE rooms (
    room_nid {{BIGINT_PK}},
    room_id TEXT NOT NULL UNIQUE,
    room_version TEXT NOT NULL,
    creator TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    -- "public" rooms are listed in the room directory.
    visibility TEXT NOT NULL DEFAULT 'private',
    -- The snapshot of the room's current state (0 = empty).
    snapshot_nid BIGINT NOT NULL DEFAULT 0,
    -- The last event published for this room (gap detection by consumers).
    last_sent_event_id TEXT
);
CREATE INDEX rooms_visibility ON rooms (visibility, room_nid);

CREATE TABLE event_types (
    type_nid {{BIGINT_PK}},
    event_type TEXT NOT NULL UNIQUE
);

CREATE TABLE state_keys (
    state_key_nid {{BIGINT_PK}},
    state_key TEXT NOT NULL UNIQUE
);

-- Every event the roomserver has seen, accepted or not. event_nid doubles as the
-- roomserver's stream order; depth is the topological order.
CREATE TABLE events (
    event_nid {{BIGINT_PK}},
    event_id TEXT NOT NULL UNIQUE,
    room_nid BIGINT NOT NULL,
    type_nid BIGINT NOT NULL,
    state_key_nid BIGINT,                 -- NULL: not a state event
    depth BIGINT NOT NULL,
    before_snapshot_nid BIGINT NOT NULL,  -- state before the event
    after_snapshot_nid BIGINT NOT NULL,   -- state after it (== before unless it changed state)
    rejected BOOLEAN NOT NULL DEFAULT FALSE,
    rejection_reason TEXT,
    soft_failed BOOLEAN NOT NULL DEFAULT FALSE,
    json {{JSON}} NOT NULL                -- the PDU as received/built (canonical JSON)
);
CREATE INDEX events_room_depth ON events (room_nid, depth);

-- A snapshot is its parent plus `delta`; a base (parent_nid NULL) holds the whole
-- state. chain_len counts the deltas above the base, bounded so a load reads few rows.
-- state_hash is an order-independent hash of the full state, so the same state reached
-- twice is stored once.
CREATE TABLE state_snapshots (
    snapshot_nid {{BIGINT_PK}},
    room_nid BIGINT NOT NULL,
    parent_nid BIGINT,
    chain_len INTEGER NOT NULL,
    state_size BIGINT NOT NULL,
    state_hash TEXT NOT NULL,
    delta {{JSON}} NOT NULL               -- [[type_nid, state_key_nid, event_nid or 0 = removed], ...]
);
CREATE UNIQUE INDEX state_snapshots_hash ON state_snapshots (room_nid, state_hash);

CREATE TABLE forward_extremities (
    room_nid BIGINT NOT NULL,
    event_nid BIGINT NOT NULL,
    PRIMARY KEY (room_nid, event_nid)
);

-- The room's current state, materialized for fast queries.
CREATE TABLE current_state (
    room_nid BIGINT NOT NULL,
    type_nid BIGINT NOT NULL,
    state_key_nid BIGINT NOT NULL,
    event_nid BIGINT NOT NULL,
    PRIMARY KEY (room_nid, type_nid, state_key_nid)
);

-- Derived from current state: the m.room.member events.
CREATE TABLE memberships (
    room_nid BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    membership TEXT NOT NULL,
    event_nid BIGINT NOT NULL,
    PRIMARY KEY (room_nid, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id, membership);
CREATE INDEX memberships_room ON memberships (room_nid, membership);

CREATE TABLE room_aliases (
    alias TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

-- Written in the event's transaction; the relay publishes rows in order and marks them.
CREATE TABLE outbox (
    outbox_nid {{BIGINT_PK}},
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    record {{JSON}} NOT NULL,
    sent BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX outbox_unsent ON outbox (sent, outbox_nid);

-- Client transaction IDs: a retried PUT /send returns the first event ID.
CREATE TABLE transactions (
    sender TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (sender, device_id, txn_id)
);

-- The result of each processed input request, so a redelivered input record gets
-- the same answer instead of being applied twice.
CREATE TABLE input_results (
    request_id TEXT PRIMARY KEY,
    result {{JSON}} NOT NULL
);
