-- Which federationapi replica sends to a destination: a lease, so that replicas sharing
-- the queue never run two workers for one destination (owner NULL: nobody holds it).
ALTER TABLE destinations ADD COLUMN owner TEXT;
ALTER TABLE destinations ADD COLUMN lease_until_ts BIGINT NOT NULL DEFAULT 0;
