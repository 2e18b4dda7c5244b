-- End-to-end encryption keys (Client-Server "End-to-End Encryption"): device keys as
-- uploaded (signed JSON), one-time keys (claimed = deleted) and fallback keys.
CREATE TABLE e2e_device_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_json {{JSON}} NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

CREATE TABLE e2e_one_time_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_json {{JSON}} NOT NULL,
    PRIMARY KEY (user_id, device_id, key_id)
);

CREATE TABLE e2e_fallback_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json {{JSON}} NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm)
);
