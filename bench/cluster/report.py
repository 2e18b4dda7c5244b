"""Figures and tables of the cluster bench (pure: PhaseResults in, dicts and markdown out)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bench.cluster import scrape
from bench.cluster.workload import PhaseResult

FEDERATION_NA = ("n/a: in the cluster the federationapi has no outbound traffic to drive — a single "
                 "homeserver has no remote servers in its rooms, so nothing is queued to send "
                 "(federation.enabled is off in the bench config)")


def _by_phase(results: Sequence[PhaseResult]) -> dict[str, PhaseResult]:
    return {r.name: r for r in results}


def _per_replica(res: PhaseResult, service: str, count: Any) -> dict[str, float]:
    """service:port -> count(scrape delta) / seconds between the two scrapes (the counters
    include the phase's set-up, e.g. room creation, so they are divided by the whole span)."""
    span = res.span_s or res.wall_s
    out: dict[str, float] = {}
    for (name, port), work in sorted(res.work.items()):
        if name == service:
            out[f"{name}:{port}"] = count(work) / span if span > 0 else 0.0
    return out


def summarize_config(label: str, results: Sequence[PhaseResult]) -> dict[str, Any]:
    """Every figure of one cluster configuration's run."""
    ph = _by_phase(results)
    e2e: dict[str, float] = {}
    for r in results:
        e2e.update(r.phase.metrics)
    services: dict[str, dict[str, Any]] = {}
    send = ph.get("send")
    if send is not None:
        rs = _per_replica(send, "roomserver", lambda w: scrape.total(w, "axon_roomserver_input_events_total"))
        proj = _per_replica(send, "syncapi", lambda w: scrape.total(w, "axon_syncapi_events_projected_total"))
        wake = _per_replica(send, "syncapi", lambda w: scrape.total(w, "axon_syncapi_wakeups_total", kind="sync"))
        ryw = _per_replica(send, "syncapi",
                           lambda w: scrape.total(w, "axon_syncapi_wakeups_total", kind="wait_event"))
        syncs = _per_replica(send, "syncapi", lambda w: scrape.http_count(w, "/sync", "GET"))
        services["roomserver input events/s"] = _entry(rs)
        services["syncapi events projected/s"] = _entry(proj)
        services["syncapi /sync wake-ups/s"] = _entry(wake)
        services["syncapi read-your-writes wake-ups/s"] = _entry(ryw)
        services["syncapi /sync responses/s"] = _entry(syncs)
        services["process CPU % (send phase)"] = {
            "per_replica": {f"{n}:{p}": 100 * c / send.span_s for (n, p), c in sorted(send.cpu_s.items())
                            if send.span_s > 0},
        }
    media = ph.get("media")
    if media is not None:
        up = _per_replica(media, "mediaapi", lambda w: scrape.http_count(w, "/upload", "POST"))
        services["mediaapi uploads/s"] = _entry(up)
    services["federationapi PDUs sent/s"] = {"na": FEDERATION_NA}
    return {
        "label": label,
        "end_to_end": e2e,
        "services": services,
        "phases": [{**r.phase.to_json(), "measured_wall_s": r.wall_s} for r in results],
    }


def _entry(per_replica: Mapping[str, float]) -> dict[str, Any]:
    tot = sum(per_replica.values())
    shares = {k: v / tot for k, v in per_replica.items()} if tot > 0 else {}
    return {"total": tot, "per_replica": dict(per_replica), "shares": shares,
            "balance": scrape.balance(shares)}


def scaling(configs: Mapping[str, Mapping[str, Any]], base: str, other: str) -> list[dict[str, Any]]:
    """other / base for the throughput figures (how much a second replica bought)."""
    if base not in configs or other not in configs:
        return []
    rows = []
    pairs = [
        ("sends/s (end to end)", lambda c: c["end_to_end"].get("send_own_msgs_per_s")),
        ("roomserver input events/s", lambda c: c["services"].get("roomserver input events/s", {}).get("total")),
        ("syncapi events projected/s", lambda c: c["services"].get("syncapi events projected/s", {}).get("total")),
        ("syncapi /sync wake-ups/s", lambda c: c["services"].get("syncapi /sync wake-ups/s", {}).get("total")),
        ("send p50 ms", lambda c: c["end_to_end"].get("send_own_p50_ms")),
        ("delivery p50 ms", lambda c: c["end_to_end"].get("delivery_p50_ms")),
    ]
    for name, get in pairs:
        a, b = get(configs[base]), get(configs[other])
        rows.append({"metric": name, base: a, other: b,
                     "ratio": (b / a) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a else None})
    return rows


def versus_synapse(axon: Mapping[str, float], synapse: Mapping[str, float]) -> list[dict[str, Any]]:
    """Axon cluster against Synapse (PostgreSQL) with the issue's targets."""
    def ratio(a: float | None, s: float | None) -> float | None:
        return a / s if a is not None and s else None

    rows = []
    a, s = axon.get("send_own_msgs_per_s"), synapse.get("send_own_msgs_per_s")
    r = ratio(a, s)
    rows.append({"metric": "sends/s (many rooms)", "axon": a, "synapse": s, "ratio": r, "target": "≥ 2× Synapse",
                 "met": None if r is None else r >= 2.0})
    for key, name in (("send_own_p50_ms", "PUT /send p50 ms"), ("send_own_p99_ms", "PUT /send p99 ms"),
                      ("delivery_p50_ms", "send→/sync p50 ms"), ("delivery_p99_ms", "send→/sync p99 ms")):
        a, s = axon.get(key), synapse.get(key)
        target, met = "", None
        if key == "delivery_p50_ms":
            target, met = "≤ 50 ms", (None if a is None else a <= 50.0)
        rows.append({"metric": name, "axon": a, "synapse": s, "ratio": ratio(a, s), "target": target, "met": met})
    return rows


def _f(v: Any, digits: int = 1) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def markdown(doc: Mapping[str, Any]) -> str:
    out: list[str] = []
    configs: Mapping[str, Any] = doc.get("configs", {})
    if configs:
        out.append("### End to end (through the nginx router)\n")
        out.append("| config | sends/s | PUT p50 ms | PUT p99 ms | send→/sync p50 ms | send→/sync p99 ms | uploads/s |")
        out.append("|---|---|---|---|---|---|---|")
        for label, c in configs.items():
            e = c["end_to_end"]
            out.append(f"| {label} | {_f(e.get('send_own_msgs_per_s'))} | {_f(e.get('send_own_p50_ms'))} | "
                       f"{_f(e.get('send_own_p99_ms'))} | {_f(e.get('delivery_p50_ms'))} | "
                       f"{_f(e.get('delivery_p99_ms'))} | {_f(e.get('uploads_per_s'))} |")
        for label, c in configs.items():
            out.append(f"\n### Per service, {label} (from each process's /metrics; rates over the phase)\n")
            out.append("| work | total /s | per replica /s (share) | min/max share |")
            out.append("|---|---|---|---|")
            for name, ent in c["services"].items():
                if "na" in ent:
                    out.append(f"| {name} | n/a | {ent['na']} | |")
                    continue
                if "total" not in ent:  # CPU
                    per = ", ".join(f"{k} {v:.0f}%" for k, v in ent["per_replica"].items())
                    out.append(f"| {name} | | {per} | |")
                    continue
                per = ", ".join(f"{k} {v:.1f} ({100 * ent['shares'].get(k, 0):.0f}%)"
                                for k, v in ent["per_replica"].items())
                out.append(f"| {name} | {_f(ent['total'])} | {per} | {_f(ent['balance'], 2)} |")
    for pair, rows in doc.get("scaling", {}).items():
        if not rows:
            continue
        base, other = pair.split(" -> ")
        out.append(f"\n### Scaling {base} → {other}\n")
        out.append(f"| metric | {base} | {other} | ratio |")
        out.append("|---|---|---|---|")
        for r in rows:
            out.append(f"| {r['metric']} | {_f(r[base])} | {_f(r[other])} | {_f(r['ratio'], 2)} |")
    vs = doc.get("versus_synapse")
    if vs:
        out.append(f"\n### Axon cluster ({doc.get('compare_config')}) vs Synapse {doc.get('synapse_version', '')}"
                   " on PostgreSQL\n")
        out.append("| metric | Axon cluster | Synapse (PostgreSQL) | ratio | target | met? |")
        out.append("|---|---|---|---|---|---|")
        for r in vs:
            out.append(f"| {r['metric']} | {_f(r['axon'])} | {_f(r['synapse'])} | {_f(r['ratio'], 2)} | "
                       f"{r['target']} | {_f(r['met']) if r['target'] else ''} |")
    return "\n".join(out)
