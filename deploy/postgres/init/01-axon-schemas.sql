-- First start of the compose PostgreSQL (docker-entrypoint-initdb.d): one schema
-- per Axon service in the `axon` database, owned by the `axon` role. The services
-- would create them too (CREATE SCHEMA IF NOT EXISTS under an advisory lock); doing
-- it here lets an operator grant the role nothing beyond its own schemas.
CREATE SCHEMA IF NOT EXISTS roomserver AUTHORIZATION axon;
CREATE SCHEMA IF NOT EXISTS userapi AUTHORIZATION axon;
CREATE SCHEMA IF NOT EXISTS syncapi AUTHORIZATION axon;
CREATE SCHEMA IF NOT EXISTS mediaapi AUTHORIZATION axon;
CREATE SCHEMA IF NOT EXISTS federationapi AUTHORIZATION axon;
CREATE SCHEMA IF NOT EXISTS appservice AUTHORIZATION axon;
