"""Pure parts of bench.cluster: /metrics parsing and deltas, shares, config parsing,
per-config summary and the markdown report."""
from __future__ import annotations

import pytest

from bench.cluster import report, scrape
from bench.cluster.__main__ import _pg_parts, parse_configs
from bench.cluster.workload import PhaseResult
from bench.hs.scenarios import Phase
from bench.hs.synapse import postgres_database, synapse_config

TEXT_A = """# HELP axon_roomserver_input_events_total x
# TYPE axon_roomserver_input_events_total counter
axon_roomserver_input_events_total{outcome="ok"} 10.0
axon_roomserver_input_events_total{outcome="error"} 1.0
# HELP axon_http_requests_total r
# TYPE axon_http_requests_total counter
axon_http_requests_total{method="POST",route="/_matrix/media/v3/upload",status="200"} 3.0
axon_http_requests_total{method="POST",route="/_matrix/media/v3/upload",status="413"} 2.0
axon_http_requests_total{method="GET",route="/sync",status="200"} 7.0
"""
TEXT_B = TEXT_A.replace('{outcome="ok"} 10.0', '{outcome="ok"} 40.0').replace(
    'status="200"} 3.0', 'status="200"} 13.0')


def test_parse_and_delta() -> None:
    a, b = scrape.parse(TEXT_A), scrape.parse(TEXT_B)
    d = scrape.delta(a, b)
    assert scrape.total(d, "axon_roomserver_input_events_total") == 30
    assert scrape.total(d, "axon_roomserver_input_events_total", outcome="error") == 0
    assert scrape.http_count(d, "/upload", "POST") == 10
    assert scrape.http_count(b, "/upload", "POST", status_prefix="4") == 2
    assert scrape.http_count(b, "/sync", "GET") == 7


def test_delta_after_restart_counts_from_zero() -> None:
    a = scrape.parse(TEXT_B)
    b = scrape.parse(TEXT_A)  # "ok" went down (40 -> 10): the process restarted, so it counts 10
    assert scrape.total(scrape.delta(a, b), "axon_roomserver_input_events_total") == 10


def test_shares_and_balance() -> None:
    s = scrape.shares([scrape.ReplicaWork("roomserver", 1, 30), scrape.ReplicaWork("roomserver", 2, 10)])
    assert s == {"roomserver:1": 0.75, "roomserver:2": 0.25}
    assert scrape.balance(s) == pytest.approx(1 / 3)
    assert scrape.balance({"a": 1.0}) is None
    assert scrape.shares([scrape.ReplicaWork("x", 1, 0)]) == {}


def test_parse_configs() -> None:
    assert parse_configs("1x1, 2x2") == [("1x1", 1, 1), ("2x2", 2, 2)]
    for bad in ("", "2", "0x1", "1x9", "ax1"):
        with pytest.raises(ValueError):
            parse_configs(bad)


def test_pg_parts_and_synapse_postgres_config(tmp_path) -> None:  # type: ignore[no-untyped-def]
    parts = _pg_parts("postgresql://postgres@127.0.0.1:55432/postgres")
    assert parts == {"user": "postgres", "host": "127.0.0.1", "port": 55432}
    db = postgres_database({**parts, "database": "bench_synapse"})
    cfg = synapse_config(tmp_path, 8448, db)
    assert cfg["database"]["name"] == "psycopg2" and cfg["database"]["args"]["database"] == "bench_synapse"
    assert synapse_config(tmp_path, 8448)["database"]["name"] == "sqlite3"
    with pytest.raises(ValueError):
        _pg_parts("not a dsn")


def _result(name: str, metrics: dict[str, float], work: dict[tuple[str, int], str], wall: float) -> PhaseResult:
    return PhaseResult(name, Phase(name, metrics=metrics, wall_s=wall), wall, wall,
                       {k: scrape.parse(v) for k, v in work.items()}, {k: wall / 2 for k in work})


def _config(sends: float, rs1: float, rs2: float) -> dict:  # type: ignore[type-arg]
    def rs_text(n: float) -> str:
        return f'axon_roomserver_input_events_total{{outcome="ok"}} {n}\n'

    send = _result("send", {"send_own_msgs_per_s": sends, "send_own_p50_ms": 40.0},
                   {("roomserver", 1): rs_text(rs1), ("roomserver", 2): rs_text(rs2),
                    ("syncapi", 3): 'axon_syncapi_events_projected_total 50\naxon_syncapi_wakeups_total{kind="sync"} 20\n'
                                    'axon_syncapi_wakeups_total{kind="wait_event"} 50\n'},
                   10.0)
    media = _result("media", {"uploads_per_s": 5.0},
                    {("mediaapi", 4): 'axon_http_requests_total{method="POST",route="/_matrix/media/v3/upload",'
                                      'status="200"} 10\n'}, 2.0)
    return report.summarize_config("c", [send, media])


def test_summary_scaling_and_markdown() -> None:
    one = _config(10.0, 100, 0)
    two = _config(18.0, 90, 90)
    rs = two["services"]["roomserver input events/s"]
    assert rs["total"] == 18.0 and rs["balance"] == 1.0
    assert one["services"]["roomserver input events/s"]["balance"] == 0.0
    assert two["services"]["syncapi events projected/s"]["total"] == 5.0
    assert two["services"]["syncapi /sync wake-ups/s"]["total"] == 2.0
    assert two["services"]["mediaapi uploads/s"]["total"] == 5.0
    assert "na" in two["services"]["federationapi PDUs sent/s"]
    rows = report.scaling({"1x1": one, "2x2": two}, "1x1", "2x2")
    assert rows[0]["ratio"] == pytest.approx(1.8)
    vs = report.versus_synapse({"send_own_msgs_per_s": 30.0, "delivery_p50_ms": 60.0},
                               {"send_own_msgs_per_s": 10.0, "delivery_p50_ms": 90.0})
    assert vs[0]["met"] is True and vs[0]["ratio"] == 3.0
    assert next(r for r in vs if r["metric"] == "send→/sync p50 ms")["met"] is False
    md = report.markdown({"configs": {"1x1": one, "2x2": two}, "scaling": {"1x1 -> 2x2": rows},
                          "versus_synapse": vs, "compare_config": "2x2"})
    assert "| 2x2 | 18.0 |" in md and "Scaling 1x1 → 2x2" in md and "| **no** |" in md
    assert "roomserver:1 9.0 (50%)" in md
