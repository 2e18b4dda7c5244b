-- Events fetched by outbound backfill (history from before what we held) get negative
-- stream positions: -1, -2, ... from this counter, so they sort before every position
-- /sync ever hands out (those start at 1) and never show up as new.
INSERT INTO stream_ids (stream, pos) VALUES ('backfill', 0);
