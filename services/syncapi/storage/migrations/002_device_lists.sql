-- Users whose device list (E2E keys) changed, at a device_lists stream position.
CREATE TABLE device_list_changes (
    user_id TEXT PRIMARY KEY,
    stream_pos BIGINT NOT NULL
);
CREATE INDEX device_list_changes_pos ON device_list_changes (stream_pos);
