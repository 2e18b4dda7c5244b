-- The mediaapi's metadata; the bytes live on disk under media.store_path.
CREATE TABLE media (
    server_name TEXT NOT NULL,
    media_id TEXT NOT NULL,
    content_type TEXT,
    upload_name TEXT,
    size_bytes BIGINT,
    sha256 TEXT,
    uploader TEXT,
    created_ts BIGINT NOT NULL,
    -- NULL while an async upload (POST /create) has not received its content.
    uploaded_ts BIGINT,
    PRIMARY KEY (server_name, media_id)
);

CREATE TABLE thumbnails (
    server_name TEXT NOT NULL,
    media_id TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    method TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    PRIMARY KEY (server_name, media_id, width, height, method)
);
