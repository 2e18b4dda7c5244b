-- Contract-suite schema: every portable type.
CREATE TABLE items (
    id {{BIGINT_PK}},
    name TEXT NOT NULL UNIQUE,
    count BIGINT NOT NULL DEFAULT 0,
    flag {{BOOLEAN}} NOT NULL DEFAULT FALSE,
    data {{BLOB}},
    doc {{JSON}},
    ratio {{DOUBLE}}
);
CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE INDEX items_count ON items (count);
