"""Resident memory and CPU time of a process tree, sampled from /proc (Linux).

The sampler runs in a thread, not on the event loop, so a loaded loop cannot
stretch its 100 ms period and hide a peak.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def parse_stat(text: str) -> tuple[int, int, int, int]:
    """(ppid, utime ticks, stime ticks, rss pages) from the text of /proc/PID/stat.

    The command name (field 2) may hold spaces and parentheses, so split after the
    last ')'."""
    rest = text[text.rindex(")") + 2:].split()
    # rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15, rss 24.
    return int(rest[1]), int(rest[11]), int(rest[12]), int(rest[21])


def _read_stat(pid: int) -> tuple[int, int, int, int] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return parse_stat(f.read())
    except (OSError, ValueError, IndexError):
        return None  # the process went away between listing and reading


def descendants(root: int, parents: dict[int, int]) -> set[int]:
    """root and every process whose ancestry reaches it, given pid -> ppid."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    tree, todo = {root}, [root]
    while todo:
        for c in children.get(todo.pop(), ()):
            if c not in tree:
                tree.add(c)
                todo.append(c)
    return tree


@dataclass
class TreeSample:
    rss_bytes: int
    cpu_seconds: float
    pids: int


def sample_tree(root: int | list[int]) -> TreeSample | None:
    """Sum of RSS and utime+stime over the process tree(s) of root (one PID or several,
    e.g. every service of a cluster); None once every root has exited."""
    roots = [root] if isinstance(root, int) else list(root)
    stats: dict[int, tuple[int, int, int, int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _read_stat(int(name))
            if st is not None:
                stats[int(name)] = st
    live = [r for r in roots if r in stats]
    if not live:
        return None
    parents = {pid: st[0] for pid, st in stats.items()}
    tree: set[int] = set()
    for r in live:
        tree |= descendants(r, parents)
    rss = sum(stats[p][3] for p in tree if p in stats) * _PAGE
    cpu = sum(stats[p][1] + stats[p][2] for p in tree if p in stats) / _TICK
    return TreeSample(rss_bytes=rss, cpu_seconds=cpu, pids=len(tree))


@dataclass
class TreeSampler:
    """Samples a process tree (or several) every `period` seconds in a daemon thread until stopped."""

    root: int | list[int]
    period: float = 0.1
    peak_rss_bytes: int = 0
    last_cpu_seconds: float = 0.0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample_once()
            self._stop.wait(self.period)

    def sample_once(self) -> None:
        s = sample_tree(self.root)
        if s is None:
            return
        self.samples += 1
        self.peak_rss_bytes = max(self.peak_rss_bytes, s.rss_bytes)
        self.last_cpu_seconds = s.cpu_seconds

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.sample_once()


class CpuClock:
    """This process's CPU time against wall time over a phase: is the client the bottleneck?"""

    def __init__(self) -> None:
        self.cpu0 = time.process_time()
        self.wall0 = time.perf_counter()

    def read(self) -> tuple[float, float]:
        """(cpu seconds, wall seconds) since construction."""
        return time.process_time() - self.cpu0, time.perf_counter() - self.wall0
