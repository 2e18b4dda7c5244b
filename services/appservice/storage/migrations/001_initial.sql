-- Events waiting to be pushed to each application service, in order.
CREATE TABLE as_queue (
    seq {{BIGINT_PK}},
    as_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_json TEXT NOT NULL
);
CREATE INDEX as_queue_as ON as_queue (as_id, seq);
CREATE UNIQUE INDEX as_queue_dedup ON as_queue (as_id, event_id);

-- Per AS: the next transaction ID, and the transaction being delivered (retried with
-- the same ID and the same events until the AS accepts it).
CREATE TABLE as_state (
    as_id TEXT PRIMARY KEY,
    next_txn_id {{BIGINT}} NOT NULL,
    pending_txn_id {{BIGINT}},
    pending_upto_seq {{BIGINT}}
);
