-- Pushers (Client-Server "Push Notifications"): one per (user, app_id, pushkey),
-- owned by the device whose access token created it (deleted with that device).
CREATE TABLE pushers (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    device_id TEXT NOT NULL,
    pusher_json {{JSON}} NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, app_id, pushkey)
);
