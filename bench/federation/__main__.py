"""python -m bench.federation — the federation benchmark (see bench/README.md).

Inbound /send throughput, outbound fan-out to 10 destinations, and a join of a remote room
with 10,000 members, against Axon (embedded) in child processes; fake remote servers
(bench/federation/remote.py) in this process. Table on stdout, JSON under .run/bench/."""
from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.federation.axon_proc import start_axon_federating
from bench.federation.remote import FakeRemote
from bench.federation.scenarios import build_resident_room, fanout, inbound, large_join
from bench.hs.launcher import log_tail

log = logging.getLogger("bench.federation")


@dataclass(frozen=True)
class Options:
    txns: int = 20
    per_txn: int = 50
    state_every: int = 5
    destinations: int = 10
    messages: int = 200
    members: int = 10_000
    join_budget_s: float = 600.0
    probe_users: int = 300

    @classmethod
    def quick(cls) -> Options:
        return cls(txns=4, messages=30, members=1000, join_budget_s=180.0)


async def _guard(name: str, coro: Any, budget_s: float, results: dict[str, Any]) -> None:
    t0 = time.perf_counter()
    try:
        results[name] = await asyncio.wait_for(coro, budget_s)
    except Exception as e:  # noqa: BLE001 - one broken scenario must not lose the others' figures
        results[name] = {"errors": [f"{type(e).__name__}: {e}" or "timeout"]}
    log.warning("  %-16s %6.1fs %s", name, time.perf_counter() - t0,
                {k: v for k, v in results[name].items() if k != "errors"} | (
                    {"ERRORS": results[name]["errors"][:2]} if results[name].get("errors") else {}))


async def run(opts: Options, workdir: Path, only: set[str], profile_join: Path | None) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if only & {"inbound", "fanout"}:
        server, name = await start_axon_federating(workdir / "axon-a")
        try:
            if "inbound" in only:
                await _guard("inbound_messages", inbound(server.base_url, name, workdir, txns=opts.txns,
                                                         per_txn=opts.per_txn, state_every=0, label="msg"),
                             600, results)
                await _guard("inbound_mixed_state", inbound(server.base_url, name, workdir, txns=opts.txns,
                                                            per_txn=opts.per_txn, state_every=opts.state_every,
                                                            label="mix"), 600, results)
            if "fanout" in only:
                await _guard("outbound_fanout", fanout(server.base_url, name, workdir, destinations=opts.destinations,
                                                       messages=opts.messages), 600, results)
        finally:
            await server.stop()
            if any(r.get("errors") for r in results.values()):
                log.warning("axon log tail:\n%s", log_tail(server.log_path, 20))
    if "join" in only:
        resident = FakeRemote(workdir, label="resident")
        await resident.start()
        try:
            t0 = time.perf_counter()
            room = await asyncio.to_thread(build_resident_room, resident, opts.members)
            build_s = time.perf_counter() - t0
            resident.resident = room
            log.warning("  resident room of %d members built and signed in %.1fs", opts.members, build_s)
            env_python = sys.executable
            server, _ = await start_axon_federating(workdir / "axon-join", python=env_python,
                                                    **({"profile_to": profile_join} if profile_join else {}))
            try:
                await _guard("large_join", large_join(server.base_url, server.pid, resident, room),  # type: ignore[arg-type]
                             opts.join_budget_s, results)
                results["large_join"]["resident_build_s"] = round(build_s, 1)
                results["large_join"]["host"] = "fake resident server (precomputed, signed state)"
            finally:
                await server.stop(grace_s=60)
                if results.get("large_join", {}).get("errors"):
                    log.warning("axon log tail:\n%s", log_tail(server.log_path, 20))
        finally:
            await resident.stop()
    if "synapse-probe" in only:
        from bench.federation.synapse_probe import probe_synapse_room_build

        await _guard("synapse_room_build_probe",
                     probe_synapse_room_build(workdir, users=opts.probe_users, target_members=opts.members),
                     900, results)
    return results


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        v = f"{v:,.1f}" if abs(v) >= 10 else f"{v:.2f}"
    return f"{v}{unit}"


def table(results: dict[str, Any], opts: Options) -> str:
    rows: list[tuple[str, str, str, str]] = []

    def ok(cond: bool | None) -> str:
        return "—" if cond is None else ("yes" if cond else "**no**")

    for key, label in (("inbound_messages", "messages only"), ("inbound_mixed_state", f"1 in {opts.state_every} a state event")):
        r = results.get(key)
        if r is None:
            continue
        rows.append((f"inbound /send, {label}: PDUs/s accepted ({r.get('pdus')} PDUs, {opts.per_txn}/txn)",
                     _fmt(r.get("accepted_pdus_per_s")), "", ok(r.get("accepted") == r.get("pdus") if "pdus" in r else None)))
        rows.append((f"inbound {label}: /send p50 / p99 per transaction (ms)",
                     f"{_fmt(r.get('txn_p50_ms'))} / {_fmt(r.get('txn_p99_ms'))}", "", ""))
        rows.append((f"inbound {label}: PDUs/s until a local /sync has them all",
                     _fmt(r.get("sync_pdus_per_s")), "", ok(r.get("sync_saw") == r.get("pdus") if "pdus" in r else None)))
    r = results.get("outbound_fanout")
    if r is not None:
        rows.append((f"outbound fan-out: PDUs delivered/s over {r.get('destinations')} destinations "
                     f"({r.get('messages')} messages)", _fmt(r.get("delivered_pdus_per_s")), "",
                     ok(r.get("delivered") == r.get("expected") and r.get("duplicates") == 0 if "expected" in r else None)))
        rows.append(("outbound fan-out: local sends/s (4 concurrent PUTs)", _fmt(r.get("sends_per_s")), "", ""))
        rows.append(("outbound fan-out: PUT answered → destination's /send, p50 / p99 (ms)",
                     f"{_fmt(r.get('delivery_p50_ms'))} / {_fmt(r.get('delivery_p99_ms'))}", "", ""))
    r = results.get("large_join")
    if r is not None:
        js, rss = r.get("join_s"), r.get("peak_rss_end_mb")
        done = r.get("join_complete_s")
        rows.append((f"join a remote room of {r.get('members_in_state', '?')} members: time to /join answer (s)",
                     _fmt(js), "", ""))
        rows.append(("  … until /joined_members lists every member (s)", _fmt(done), "< 30 s",
                     ok(done < 30 if done is not None else None)))
        rows.append(("  joining Axon's peak RSS (MB, VmHWM)", _fmt(rss), "< 500 MB", ok(rss < 500 if rss else None)))
        rows.append(("  joined_members after the join (count correct?)", _fmt(r.get("joined_members_after")), "",
                     ok(not r.get("errors") if "joined_members_after" in r else None)))
    r = results.get("synapse_room_build_probe")
    if r is not None:
        rows.append((f"Synapse probe: registrations+joins/s into one room ({r.get('users')} users, 8 at a time)",
                     _fmt(r.get("joins_per_s")), "", ""))
        rows.append((f"Synapse probe: extrapolated time to build a {r.get('target_members')}-member room (s)",
                     _fmt(r.get("extrapolated_s_for_target")), "", ""))
    out = ["| metric | Axon | target | ok? |", "|---|---|---|---|"]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.federation", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small workload (4 txns, 30 messages, 1000-member join)")
    p.add_argument("--only", default="inbound,fanout,join", help="comma list of inbound, fanout, join, synapse-probe (not in the default: "
                   "how long a real Synapse takes to build a room of --members users, from --probe-users joins)")
    p.add_argument("--probe-users", type=int, help="joins the Synapse probe times (default 300)")
    p.add_argument("--members", type=int, help="members in the remote room of the join scenario")
    p.add_argument("--messages", type=int, help="messages of the fan-out scenario")
    p.add_argument("--txns", type=int, help="inbound transactions (50 PDUs each)")
    p.add_argument("--out", default=os.path.join(os.environ.get("AXON_RUN_DIR", ".run"), "bench", "federation.json"))
    p.add_argument("--profile-join", metavar="FILE", help="run the joining Axon under cProfile, stats to FILE")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (Axon logs, data)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    opts = Options.quick() if args.quick else Options()
    over = {k: v for k, v in (("members", args.members), ("messages", args.messages), ("txns", args.txns),
                                       ("probe_users", args.probe_users)) if v}
    if over:
        opts = Options(**{**asdict(opts), **over})
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    workdir = Path(tempfile.mkdtemp(prefix="axon-bench-fed-"))
    started = datetime.datetime.now(datetime.timezone.utc)
    load_start = os.getloadavg()
    try:
        results = asyncio.run(run(opts, workdir, only, Path(args.profile_join).resolve() if args.profile_join else None))
    finally:
        if args.keep:
            log.warning("kept %s", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    md = table(results, opts)
    print(md)
    doc = {"bench": "federation", "started": started.isoformat(), "options": asdict(opts), "quick": args.quick,
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                       "loadavg_at_start": load_start, "loadavg_at_end": os.getloadavg()},
           "results": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))
    out.with_suffix(".md").write_text(md + "\n")
    print(f"\nwritten: {out}")
    return 1 if any(r.get("errors") for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
