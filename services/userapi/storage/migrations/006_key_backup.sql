-- Server-side key backups (Client-Server "Server-side key backups"): versions per
-- user (deleted ones are kept, flagged, so version numbers are never reused) and
-- the backed-up session keys of each version.
CREATE TABLE e2e_backup_versions (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    algorithm TEXT NOT NULL,
    auth_data {{JSON}} NOT NULL,
    etag BIGINT NOT NULL DEFAULT 0,
    deleted BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, version)
);

CREATE TABLE e2e_backup_keys (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    key_json {{JSON}} NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);
