"""The homeserver configuration as plain dataclasses (one YAML file, see docs/config.md).

Every field has a default; the defaults are the *production* defaults
(registration off, rate limits on). `libs.config.loader.dev_config()` returns the
local development defaults used by `make run`.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ListenConfig:
    host: str = "127.0.0.1"
    port: int = 8008
    # Optional second listener over TLS (same app), e.g. for federation; 0 = off.
    tls_port: int = 0
    tls_cert_path: str = ""
    tls_key_path: str = ""


@dataclass
class DatabaseConfig:
    # "sqlite": one file per service under sqlite_dir (":memory:" for throwaway
    # in-memory databases, tests only); "postgres": one schema per service.
    kind: str = "sqlite"
    sqlite_dir: str = "data/db"
    postgres_dsn: str = "postgresql://axon@127.0.0.1:5432/axon"
    # Prepended to each service's schema name (lets several homeservers, or test
    # runs, share one PostgreSQL database).
    postgres_schema_prefix: str = ""
    pool_min_size: int = 1
    pool_max_size: int = 10
    connect_timeout_s: float = 5.0
    # Per-statement timeout; 0 disables it.
    statement_timeout_s: float = 30.0
    # SQLite: how long a writer from another process waits for the file lock.
    sqlite_busy_timeout_ms: int = 5000
    # SQLite `PRAGMA synchronous`: "NORMAL" (WAL fsynced only at checkpoints:
    # survives kill -9 / crashes of the process, may lose the last commits on
    # power loss or OS crash) or "FULL" (fsync every commit: power-loss safe, slower).
    sqlite_synchronous: str = "NORMAL"


@dataclass
class LogConfig:
    """The event log (not logging): embedded durable log or Kafka."""
    kind: str = "embedded"  # "embedded" | "kafka"
    embedded_path: str = "data/log"
    # fsync every embedded-log commit. false: kill -9 safe (appends reach the OS
    # before send() returns), not power-loss safe; true: power-loss safe, slower.
    embedded_fsync: bool = False
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_topic_prefix: str = "axon."
    kafka_client_id: str = "axon"


@dataclass
class RegistrationConfig:
    enabled: bool = False
    # When set, registration needs an m.login.registration_token stage.
    require_token: bool = False
    registration_tokens: list[str] = field(default_factory=list)
    # Offer the m.login.dummy flow (open registration) when enabled and no token required.
    allow_dummy_flow: bool = True
    # Shared secret for the admin registration API / `axon create-user`; empty = off.
    shared_secret: str = ""
    allow_guests: bool = False
    # bcrypt cost factor for password hashes (each +1 doubles the work).
    bcrypt_rounds: int = 12


@dataclass
class RateLimit:
    """Token bucket: `per_second` sustained, `burst` at once."""
    per_second: float = 1.0
    burst: int = 10


@dataclass
class RateLimitingConfig:
    enabled: bool = True
    message: RateLimit = field(default_factory=lambda: RateLimit(per_second=1.0, burst=10))
    login: RateLimit = field(default_factory=lambda: RateLimit(per_second=0.2, burst=5))
    register: RateLimit = field(default_factory=lambda: RateLimit(per_second=0.2, burst=5))
    join: RateLimit = field(default_factory=lambda: RateLimit(per_second=0.5, burst=10))
    invite: RateLimit = field(default_factory=lambda: RateLimit(per_second=0.3, burst=10))
    media_upload: RateLimit = field(default_factory=lambda: RateLimit(per_second=1.0, burst=10))


@dataclass
class MediaConfig:
    store_path: str = "data/media"
    max_upload_bytes: int = 50 * 1024 * 1024
    thumbnail_sizes: list[list[int]] = field(
        default_factory=lambda: [[32, 32], [96, 96], [320, 240], [640, 480], [800, 600]]
    )


@dataclass
class FederationConfig:
    """The Server-Server API (services/federationapi, docs/config.md "federation")."""
    # Serve the federation routes (/send, queries, notary); keys and /version are always served.
    enabled: bool = False
    # Deny outbound requests to private/loopback addresses (tests may turn this off).
    block_private_addresses: bool = True
    key_validity_period_ms: int = 7 * 24 * 3600 * 1000
    trusted_key_servers: list[str] = field(default_factory=lambda: ["matrix.org"])
    # Our retired signing keys, served in old_verify_keys: "ed25519:<version> <b64 public key> <expired_ts ms>".
    old_signing_keys: list[str] = field(default_factory=list)
    # TLS listener for the federation API (0 = none; listen.tls_port is the generic one).
    tls_port: int = 0
    tls_cert_path: str = ""
    tls_key_path: str = ""
    # Outbound TLS: verify peers' certificates (turn off only for loopback interop tests)
    # and optionally trust an extra CA bundle (PEM file).
    verify_tls: bool = True
    tls_ca_file: str = ""
    connect_timeout_s: float = 10.0
    request_timeout_s: float = 30.0
    max_response_bytes: int = 10 * 1024 * 1024
    # Retries of one outbound request (connection errors, 5xx) with exponential backoff.
    max_retries: int = 2
    # Outbound queue: per-destination backoff after failures, and sharding of the
    # destinations over replicas (a replica runs the destinations with
    # partition_for(destination, shard_count) == shard_index).
    retry_initial_backoff_s: float = 5.0
    retry_max_backoff_s: float = 3600.0
    shard_index: int = 0
    shard_count: int = 1
    # After an outage, a backlog larger than this is cut to the newest PDU per room.
    catchup_max_pdus: int = 50


@dataclass
class AppServiceConfig:
    """Outbound requests to application services (services/appservice)."""
    # Verify the ASes' TLS certificates, optionally against an extra CA bundle (PEM).
    verify_tls: bool = True
    tls_ca_file: str = ""
    request_timeout_s: float = 30.0
    # Backoff between failed transaction attempts, per AS.
    retry_initial_backoff_s: float = 1.0
    retry_max_backoff_s: float = 300.0
    # Events per transaction.
    max_events_per_txn: int = 100


@dataclass
class LoggingConfig:
    level: str = "INFO"
    # "json" (one JSON object per line) or "text".
    format: str = "json"


@dataclass
class ClientConfig:
    # Accept the deprecated ?access_token= query parameter.
    allow_query_access_token: bool = False
    max_request_body_bytes: int = 1024 * 1024
    # Room version of createRoom without `room_version` (also /capabilities' default).
    default_room_version: str = "11"


@dataclass
class ClusterConfig:
    """Cluster mode (`axon run-service`): each service's replicas, by internal base URL.

    Calls to a service with several URLs go round-robin (any replica answers queries)."""
    roomserver: list[str] = field(default_factory=list)
    userapi: list[str] = field(default_factory=list)
    syncapi: list[str] = field(default_factory=list)
    mediaapi: list[str] = field(default_factory=list)
    federationapi: list[str] = field(default_factory=list)
    clientapi: list[str] = field(default_factory=list)
    appservice: list[str] = field(default_factory=list)
    # Sent in X-Axon-Internal-Secret on every internal call; empty = no check (dev only).
    internal_secret: str = ""
    rpc_timeout_s: float = 30.0
    # Access-token lookups are cached per process this long: a logged-out token keeps
    # working on *other* replicas for at most this long (the replica that served the
    # logout forgets it at once). 0 = no cache.
    token_cache_ttl_s: float = 1.0


@dataclass
class HomeserverConfig:
    server_name: str = "localhost"
    public_baseurl: str = "https://localhost/"
    signing_key_path: str = "data/signing.key"
    data_dir: str = "data"
    listen: ListenConfig = field(default_factory=ListenConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    log: LogConfig = field(default_factory=LogConfig)
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    rate_limiting: RateLimitingConfig = field(default_factory=RateLimitingConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    client: ClientConfig = field(default_factory=ClientConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    # Application-service registration YAML files (id, url, as_token, hs_token,
    # sender_localpart, namespaces).
    app_service_config_files: list[str] = field(default_factory=list)
    appservice: AppServiceConfig = field(default_factory=AppServiceConfig)
