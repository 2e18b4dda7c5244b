-- Minimal presence: the last state a user set (or implied by /sync?set_presence).
CREATE TABLE presence (
    user_id TEXT PRIMARY KEY,
    presence TEXT NOT NULL,
    status_msg TEXT,
    last_active_ts BIGINT NOT NULL
);
