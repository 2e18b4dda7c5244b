"""The comparison table and JSON report (pure; no I/O).

Ratios are always Axon / Synapse, so "≥ 3×" on a throughput and "≤ 0.33×" on a
latency both read the same way: the number in the ratio column against the target.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

Better = Literal["higher", "lower"]


@dataclass(frozen=True)
class Target:
    """Axon/Synapse ratio required: `>=` factor for higher-is-better metrics, `<=` for lower."""

    op: Literal[">=", "<="]
    factor: float

    def met(self, ratio: float) -> bool:
        return ratio >= self.factor if self.op == ">=" else ratio <= self.factor

    def label(self) -> str:
        return f"{'≥' if self.op == '>=' else '≤'} {_fmt_factor(self.factor)}×"


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    better: Better
    target: Target | None = None


# The targets (homeserver issue, "Performance"); other rows are context.
METRICS: tuple[Metric, ...] = (
    Metric("send_shared_msgs_per_s", "send throughput, 10 senders, 1 shared room", "msg/s", "higher", Target(">=", 3.0)),
    Metric("send_shared_p50_ms", "send latency p50 (shared room)", "ms", "lower"),
    Metric("send_shared_p99_ms", "send latency p99 (shared room)", "ms", "lower"),
    Metric("send_own_msgs_per_s", "send throughput, 10 senders, own rooms", "msg/s", "higher", Target(">=", 3.0)),
    Metric("send_own_p50_ms", "send latency p50 (own rooms)", "ms", "lower"),
    Metric("send_own_p99_ms", "send latency p99 (own rooms)", "ms", "lower"),
    Metric("delivery_p50_ms", "send→/sync delivery p50", "ms", "lower", Target("<=", 1 / 3)),
    Metric("delivery_p99_ms", "send→/sync delivery p99", "ms", "lower"),
    Metric("initial_sync_median_ms", "initial /sync, 20 rooms (median)", "ms", "lower", Target("<=", 0.5)),
    Metric("peak_rss_mb", "peak RSS of the server process tree", "MiB", "lower", Target("<=", 1.0)),
    Metric("server_cpu_s", "server CPU time, whole run", "s", "lower"),
    Metric("client_cpu_pct", "bench client CPU (of one core) during timed phases", "%", "lower"),
)


def _fmt_factor(f: float) -> str:
    if abs(f - 1 / 3) < 1e-9:
        return "1/3"
    if abs(f - 0.5) < 1e-9:
        return "1/2"
    return f"{f:g}"


def fmt_value(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if unit in ("msg/s", "ms", "MiB", "s", "%"):
        return f"{value:,.1f}"
    return f"{value:g}"


def ratio(axon: float | None, synapse: float | None) -> float | None:
    """Axon / Synapse, or None when either is missing or Synapse's is zero."""
    if axon is None or synapse is None or synapse == 0:
        return None
    if math.isnan(axon) or math.isnan(synapse):
        return None
    return axon / synapse


@dataclass(frozen=True)
class Row:
    metric: Metric
    axon: float | None
    synapse: float | None
    ratio: float | None
    met: bool | None  # None: no target, or not measurable

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric.key,
            "label": self.metric.label,
            "unit": self.metric.unit,
            "axon": self.axon,
            "synapse": self.synapse,
            "ratio": self.ratio,
            "target": self.metric.target.label() if self.metric.target else None,
            "met": self.met,
        }


def compare(axon: dict[str, float], synapse: dict[str, float],
            metrics: tuple[Metric, ...] = METRICS) -> list[Row]:
    rows = []
    for m in metrics:
        a, s = axon.get(m.key), synapse.get(m.key)
        r = ratio(a, s)
        met = m.target.met(r) if (m.target is not None and r is not None) else None
        rows.append(Row(m, a, s, r, met))
    return rows


def markdown_comparison(rows: list[Row], names: tuple[str, str] = ("Axon", "Synapse")) -> str:
    lines = [
        f"| metric | {names[0]} | {names[1]} | ratio | target | met? |",
        "|---|---:|---:|---:|---|---|",
    ]
    for row in rows:
        m = row.metric
        r = "—" if row.ratio is None else f"{row.ratio:.2f}×"
        target = m.target.label() if m.target else ""
        met = "" if m.target is None else ("—" if row.met is None else ("yes" if row.met else "**no**"))
        lines.append(
            f"| {m.label} ({m.unit}) | {fmt_value(row.axon, m.unit)} | {fmt_value(row.synapse, m.unit)}"
            f" | {r} | {target} | {met} |"
        )
    return "\n".join(lines)


def markdown_single(name: str, values: dict[str, float], metrics: tuple[Metric, ...] = METRICS) -> str:
    lines = [f"| metric | {name} |", "|---|---:|"]
    for m in metrics:
        lines.append(f"| {m.label} ({m.unit}) | {fmt_value(values.get(m.key), m.unit)} |")
    return "\n".join(lines)
