-- Depends on 001 (must run after it).
CREATE TABLE order_log (step INTEGER NOT NULL, note TEXT NOT NULL, PRIMARY KEY (step));
INSERT INTO order_log (step, note) VALUES (2, 'second; with a semicolon in a string');
INSERT INTO kv (k, v) VALUES ('migrated', '002');
