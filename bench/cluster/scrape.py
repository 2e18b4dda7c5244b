"""Prometheus /metrics of each service process: parse, diff two scrapes, rates and shares (pure)."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

# A sample: (metric name as exposed, sorted label pairs).
SampleKey = tuple[str, tuple[tuple[str, str], ...]]
Scrape = dict[SampleKey, float]


def parse(text: str) -> Scrape:
    """Every sample of a text exposition (counters keep their `_total` name)."""
    out: Scrape = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def delta(before: Scrape, after: Scrape) -> Scrape:
    """after - before per sample (a sample new in `after` counts from 0; a counter
    that went down — the process restarted — counts from 0 too)."""
    out: Scrape = {}
    for key, v in after.items():
        b = before.get(key, 0.0)
        out[key] = v - b if v >= b else v
    return out


def total(scrape: Scrape, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, lbl), v in scrape.items() if n == name and want <= set(lbl))


def http_count(scrape: Scrape, route_suffix: str, method: str | None = None, status_prefix: str = "2") -> float:
    """Requests counted by the HTTP middleware on routes ending with `route_suffix`."""
    n = 0.0
    for (name, lbl), v in scrape.items():
        if name != "axon_http_requests_total":
            continue
        d = dict(lbl)
        if not d.get("route", "").endswith(route_suffix):
            continue
        if method is not None and d.get("method") != method:
            continue
        if not d.get("status", "").startswith(status_prefix):
            continue
        n += v
    return n


@dataclass(frozen=True)
class ReplicaWork:
    """One replica's count of a piece of work over the measured window."""

    service: str
    port: int
    count: float


def shares(work: Iterable[ReplicaWork]) -> dict[str, float]:
    """Each replica's fraction of the total ("service:port" -> 0..1); {} if no work."""
    items = list(work)
    tot = sum(w.count for w in items)
    if tot <= 0:
        return {}
    return {f"{w.service}:{w.port}": w.count / tot for w in items}


def balance(share_map: Mapping[str, float]) -> float | None:
    """min share / max share over replicas (1.0 = perfectly even, 0 = one idles); None if < 2."""
    if len(share_map) < 2:
        return None
    hi = max(share_map.values())
    return min(share_map.values()) / hi if hi > 0 else None
