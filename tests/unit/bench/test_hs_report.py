"""bench.hs pure parts: comparison rows, targets, markdown, /proc parsing, configs."""
from __future__ import annotations

from pathlib import Path

import pytest

from bench.hs import report
from bench.hs.procs import descendants, parse_stat
from bench.hs.report import METRICS, Metric, Target, compare, markdown_comparison, markdown_single


def _by_key(rows: list[report.Row]) -> dict[str, report.Row]:
    return {r.metric.key: r for r in rows}


def test_targets() -> None:
    assert Target(">=", 3.0).met(3.0)
    assert not Target(">=", 3.0).met(2.99)
    assert Target("<=", 1 / 3).met(0.3)
    assert not Target("<=", 1 / 3).met(0.34)
    assert Target("<=", 1 / 3).label() == "≤ 1/3×"
    assert Target("<=", 0.5).label() == "≤ 1/2×"
    assert Target(">=", 3.0).label() == "≥ 3×"


def test_issue_targets_are_in_the_table() -> None:
    targets = {m.key: m.target for m in METRICS if m.target}
    assert targets["send_shared_msgs_per_s"] == Target(">=", 3.0)
    assert targets["delivery_p50_ms"] == Target("<=", 1 / 3)
    assert targets["initial_sync_median_ms"] == Target("<=", 0.5)
    assert targets["peak_rss_mb"] == Target("<=", 1.0)


def test_compare_ratio_is_axon_over_synapse_and_met() -> None:
    axon = {"send_shared_msgs_per_s": 300.0, "delivery_p50_ms": 40.0, "initial_sync_median_ms": 60.0,
            "peak_rss_mb": 90.0}
    synapse = {"send_shared_msgs_per_s": 100.0, "delivery_p50_ms": 100.0, "initial_sync_median_ms": 100.0,
               "peak_rss_mb": 90.0}
    rows = _by_key(compare(axon, synapse))
    assert rows["send_shared_msgs_per_s"].ratio == pytest.approx(3.0)
    assert rows["send_shared_msgs_per_s"].met is True
    assert rows["delivery_p50_ms"].ratio == pytest.approx(0.4)
    assert rows["delivery_p50_ms"].met is False
    assert rows["initial_sync_median_ms"].met is False
    assert rows["peak_rss_mb"].met is True  # equal is within "≤ Synapse's"


def test_compare_missing_or_zero_is_not_measurable() -> None:
    rows = _by_key(compare({"send_shared_msgs_per_s": 10.0}, {"send_shared_msgs_per_s": 0.0}))
    assert rows["send_shared_msgs_per_s"].ratio is None
    assert rows["send_shared_msgs_per_s"].met is None
    assert rows["delivery_p50_ms"].axon is None and rows["delivery_p50_ms"].met is None
    # Rows without a target never claim met/not met.
    assert rows["send_shared_p99_ms"].met is None


def test_markdown_comparison() -> None:
    m = (Metric("x", "thing", "msg/s", "higher", Target(">=", 3.0)), Metric("y", "other", "ms", "lower"))
    text = markdown_comparison(compare({"x": 1234.5, "y": 2.0}, {"x": 1000.0}, m))
    lines = text.splitlines()
    assert lines[0] == "| metric | Axon | Synapse | ratio | target | met? |"
    assert lines[2] == "| thing (msg/s) | 1,234.5 | 1,000.0 | 1.23× | ≥ 3× | **no** |"
    assert lines[3] == "| other (ms) | 2.0 | — | — |  |  |"
    assert all(line.count("|") == 7 for line in lines)


def test_markdown_single_and_json_rows() -> None:
    text = markdown_single("synapse", {"peak_rss_mb": 123.04})
    assert "| peak RSS of the server process tree (MiB) | 123.0 |" in text
    assert len(text.splitlines()) == len(METRICS) + 2
    row = compare({"peak_rss_mb": 50.0}, {"peak_rss_mb": 100.0})[-3]
    assert row.to_json()["metric"] == "peak_rss_mb"
    assert row.to_json()["target"] == "≤ 1×" and row.to_json()["met"] is True


def test_fmt_value() -> None:
    assert report.fmt_value(None, "ms") == "—"
    assert report.fmt_value(float("nan"), "ms") == "—"
    assert report.fmt_value(12.345, "ms") == "12.3"


def test_parse_stat_handles_spaces_and_parens_in_comm() -> None:
    fields = ["S", "42"] + ["0"] * 9 + ["150", "25"] + ["0"] * 8 + ["777"] + ["0"] * 10
    text = "1234 (weird ) name) " + " ".join(fields)
    assert parse_stat(text) == (42, 150, 25, 777)


def test_parse_stat_of_this_process() -> None:
    import os

    ppid, _u, _s, rss = parse_stat(Path(f"/proc/{os.getpid()}/stat").read_text())
    assert ppid == os.getppid()
    assert rss > 0


def test_descendants() -> None:
    parents = {1: 0, 10: 1, 11: 10, 12: 10, 13: 11, 20: 1, 21: 20}
    assert descendants(10, parents) == {10, 11, 12, 13}
    assert descendants(21, parents) == {21}
    assert descendants(99, parents) == {99}


def test_synapse_config_is_loopback_open_and_unlimited(tmp_path: Path) -> None:
    from bench.hs.synapse import prepare, synapse_config

    cfg = synapse_config(tmp_path, 12345)
    assert cfg["server_name"] == "localhost:12345"
    assert [lst["bind_addresses"] for lst in cfg["listeners"]] == [["127.0.0.1"]]
    assert all("federation" not in r["names"] for lst in cfg["listeners"] for r in lst["resources"])
    assert cfg["enable_registration"] and cfg["enable_registration_without_verification"]
    assert cfg["report_stats"] is False
    assert cfg["database"]["name"] == "sqlite3"
    for key in ("rc_message", "rc_registration", "rc_joins_per_room", "rc_room_creation"):
        assert cfg[key]["per_second"] >= 100_000
    assert cfg["rc_joins"]["local"]["burst_count"] >= 100_000
    path = prepare(tmp_path / "syn", 12345)
    key = (tmp_path / "syn" / "signing.key").read_text().split()
    assert key[0] == "ed25519" and len(key) == 3 and "=" not in key[2]
    import yaml

    assert yaml.safe_load(path.read_text())["listeners"][0]["port"] == 12345


def test_sample_tree_of_this_process_and_several_roots() -> None:
    import os
    import subprocess
    import sys

    from bench.hs.procs import TreeSampler, sample_tree

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        mine = sample_tree(os.getpid())
        assert mine is not None and mine.pids >= 2 and mine.rss_bytes > 0 and mine.cpu_seconds > 0
        only_child = sample_tree(child.pid)
        assert only_child is not None and only_child.pids == 1
        both = sample_tree([child.pid, 999_999_999])
        assert both is not None and both.pids == 1
        sampler = TreeSampler(child.pid, period=0.01)
        sampler.start()
        sampler.stop()
        assert sampler.samples >= 1 and sampler.peak_rss_bytes == max(sampler.peak_rss_bytes, 1)
    finally:
        child.kill()
        child.wait()
    assert sample_tree(999_999_999) is None


def test_document_compares_two_servers_and_names_the_workload() -> None:
    from bench.hs.__main__ import Options, _document

    both = _document({"axon": {"metrics": {"peak_rss_mb": 50.0}, "version": "0.1.0"},
                      "synapse": {"metrics": {"peak_rss_mb": 100.0}, "version": "1.163.2"}}, Options.quick())
    rows = {r["metric"]: r for r in both["comparison"]}
    assert rows["peak_rss_mb"]["ratio"] == 0.5 and rows["peak_rss_mb"]["met"] is True
    assert "| Axon | Synapse |" in both["markdown"]
    assert "4 senders × 10 messages" in both["markdown"] and "synapse 1.163.2" in both["markdown"]
    one = _document({"target": {"metrics": {}, "version": ""}}, Options())
    assert "comparison" not in one and "| metric | target |" in one["markdown"]
