-- The syncapi's projection. Positions are per stream, allocated from stream_ids
-- (the row lock held until commit keeps positions committing in order).
CREATE TABLE stream_ids (
    stream TEXT PRIMARY KEY,
    pos BIGINT NOT NULL
);
INSERT INTO stream_ids (stream, pos) VALUES ('events', 0), ('receipts', 0), ('to_device', 0), ('account_data', 0), ('device_lists', 0);

CREATE TABLE rooms (
    room_id TEXT PRIMARY KEY,
    room_version TEXT NOT NULL,
    last_event_id TEXT
);

-- Every event we know: timeline events have a stream_pos; state-only events
-- fetched from the roomserver (never seen on the output) have NULL.
CREATE TABLE events (
    event_nid {{BIGINT_PK}},
    event_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    stream_pos BIGINT,
    type TEXT NOT NULL,
    state_key TEXT,
    sender TEXT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    json {{JSON}} NOT NULL,
    device_id TEXT,
    txn_id TEXT,
    redacted_by TEXT,
    -- the (type, state_key) value this state event replaced, for prev_content
    replaces_event_id TEXT
);
CREATE UNIQUE INDEX events_stream_pos ON events (stream_pos);
CREATE INDEX events_room_pos ON events (room_id, stream_pos);

CREATE TABLE current_state (
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    membership TEXT,
    stream_pos BIGINT NOT NULL,
    PRIMARY KEY (room_id, type, state_key)
);
CREATE INDEX current_state_members ON current_state (type, state_key);

-- Each change of a room's current state, to rewind it to any position.
CREATE TABLE state_deltas (
    room_id TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT,
    prev_event_id TEXT,
    membership TEXT,
    PRIMARY KEY (room_id, stream_pos, type, state_key)
);
CREATE INDEX state_deltas_member ON state_deltas (type, state_key, stream_pos);

-- Redactions seen, also before their target arrives.
CREATE TABLE redactions (
    redaction_id TEXT PRIMARY KEY,
    redacts TEXT NOT NULL
);
CREATE INDEX redactions_redacts ON redactions (redacts);

CREATE TABLE receipts (
    room_id TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    user_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    ts BIGINT NOT NULL,
    stream_pos BIGINT NOT NULL,
    PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
CREATE INDEX receipts_pos ON receipts (stream_pos);

CREATE TABLE to_device (
    stream_pos BIGINT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    type TEXT NOT NULL,
    content {{JSON}} NOT NULL,
    message_id TEXT NOT NULL,
    UNIQUE (user_id, device_id, sender, message_id)
);
CREATE INDEX to_device_target ON to_device (user_id, device_id, stream_pos);

CREATE TABLE account_data (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    data_type TEXT NOT NULL,
    content {{JSON}} NOT NULL,
    stream_pos BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, data_type)
);
CREATE INDEX account_data_pos ON account_data (user_id, stream_pos);
