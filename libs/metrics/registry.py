"""Per-service Prometheus metrics (no global registry).

    metrics = ServiceMetrics("roomserver")
    metrics.records_processed.labels(topic="roomserver.input").inc()
    metrics.consumer_lag.labels(topic="roomserver.input", partition="3").set(12)
    metrics.queue_depth.labels(queue="room_workers").set(n)
    my_counter = metrics.counter("axon_events_persisted_total", "Events persisted", ["room_version"])
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

# A callback counter's reading: label values (in label order) -> running total.
CounterReading = dict[tuple[str, ...], float]

# Latency buckets suited to a homeserver: sub-millisecond cache hits up to long-polls.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class ServiceMetrics:
    """One service's registry and the standard metrics every service exposes."""

    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.service = service
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._own: dict[str, Counter | Gauge | Histogram] = {}
        self._callbacks: dict[str, Collector] = {}
        self.http_requests = self.counter(
            "axon_http_requests_total", "HTTP requests by route template and status",
            ["method", "route", "status"],
        )
        self.http_latency = self.histogram(
            "axon_http_request_duration_seconds", "HTTP request latency by route template",
            ["method", "route"], buckets=LATENCY_BUCKETS,
        )
        self.http_in_flight = self.gauge(
            "axon_http_requests_in_flight", "HTTP requests being served", []
        )
        self.records_processed = self.counter(
            "axon_log_records_processed_total", "Log records processed", ["topic"]
        )
        self.consumer_lag = self.gauge(
            "axon_log_consumer_lag", "Records behind the log end, per topic/partition",
            ["topic", "partition"],
        )
        self.queue_depth = self.gauge("axon_queue_depth", "Items waiting in an internal queue", ["queue"])

    def _register(self, name: str, metric: Counter | Gauge | Histogram) -> None:
        self._own[name] = metric

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        """A counter on this registry (the same object if asked twice)."""
        if name in self._own:
            m = self._own[name]
            assert isinstance(m, Counter), f"{name} exists with another type"
            return m
        c = Counter(name, doc, list(labels), registry=self.registry)
        self._register(name, c)
        return c

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        if name in self._own:
            m = self._own[name]
            assert isinstance(m, Gauge), f"{name} exists with another type"
            return m
        g = Gauge(name, doc, list(labels), registry=self.registry)
        self._register(name, g)
        return g

    def histogram(
        self, name: str, doc: str, labels: Sequence[str] = (), buckets: Sequence[float] = LATENCY_BUCKETS
    ) -> Histogram:
        if name in self._own:
            m = self._own[name]
            assert isinstance(m, Histogram), f"{name} exists with another type"
            return m
        h = Histogram(name, doc, list(labels), registry=self.registry, buckets=list(buckets))
        self._register(name, h)
        return h

    def callback_counter(self, name: str, doc: str, read: Callable[[], CounterReading],
                         labels: Sequence[str] = ()) -> None:
        """A counter whose totals are read from ``read()`` at scrape time.

        For counts a component already keeps as plain ints (records processed, events
        projected): nothing on the hot path touches Prometheus objects. A reader that
        raises exposes no samples for that scrape."""
        if name in self._callbacks:
            raise ValueError(f"callback counter {name} registered twice")
        collector = _CallbackCounter(name, doc, list(labels), read)
        self.registry.register(collector)
        self._callbacks[name] = collector

    # Convenience for the log runner.
    def record_processed(self, topic: str, n: int = 1) -> None:
        self.records_processed.labels(topic=topic).inc(n)

    def set_consumer_lag(self, topic: str, partition: int, lag: int) -> None:
        self.consumer_lag.labels(topic=topic, partition=str(partition)).set(lag)

    def set_queue_depth(self, queue: str, depth: int) -> None:
        self.queue_depth.labels(queue=queue).set(depth)

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition format and its content type, for /metrics."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _CallbackCounter(Collector):
    def __init__(self, name: str, doc: str, labels: list[str], read: Callable[[], CounterReading]) -> None:
        # prometheus_client appends "_total" to counter families itself.
        self._family = name[: -len("_total")] if name.endswith("_total") else name
        self._doc = doc
        self._labels = labels
        self._read = read

    def collect(self) -> Iterator[Metric]:
        fam = CounterMetricFamily(self._family, self._doc, labels=self._labels)
        try:
            reading = self._read()
        except Exception:  # a broken reader must not break /metrics for everything else
            reading = {}
        for values, total in reading.items():
            if len(values) == len(self._labels):
                fam.add_metric(list(values), float(total))
        yield fam
