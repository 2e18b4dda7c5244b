"""Observability shared by every service: per-service Prometheus metrics
(registry.py), HTTP metrics middleware and /health /ready /metrics (http.py),
structured logging with request ids and secret redaction (logs.py)."""
from libs.metrics.http import MetricsMiddleware, ReadyCheck, health_router, run_checks
from libs.metrics.logs import (
    REQUEST_ID_HEADER,
    JsonFormatter,
    RedactingFilter,
    RequestIdMiddleware,
    bind_request_id,
    current_request_id,
    redact,
    request_id_var,
    setup_logging,
)
from libs.metrics.registry import LATENCY_BUCKETS, ServiceMetrics

__all__ = [
    "LATENCY_BUCKETS",
    "REQUEST_ID_HEADER",
    "JsonFormatter",
    "MetricsMiddleware",
    "ReadyCheck",
    "RedactingFilter",
    "RequestIdMiddleware",
    "ServiceMetrics",
    "bind_request_id",
    "current_request_id",
    "health_router",
    "redact",
    "request_id_var",
    "run_checks",
    "setup_logging",
]
