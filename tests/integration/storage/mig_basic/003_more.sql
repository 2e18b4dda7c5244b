ALTER TABLE kv ADD COLUMN extra TEXT;
INSERT INTO order_log (step, note) VALUES (3, 'third');
