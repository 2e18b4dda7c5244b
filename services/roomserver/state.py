"""State snapshots as deduplicated deltas: the pure part (no I/O).

A snapshot is a parent snapshot plus a small delta of
``(type_nid, state_key_nid) -> event_nid`` (event_nid 0 = the entry was removed).
Every `MAX_CHAIN` deltas a full base is written instead, so loading any snapshot
reads at most `MAX_CHAIN + 1` rows. Snapshots are identified by an
order-independent hash of the whole state (the sum of per-entry hashes modulo
2**128): it is updated in O(delta) and two paths reaching the same state map to
the same snapshot row. An event that changes no state reuses its parent's snapshot.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

# Deltas above a full base. A load walks at most this many rows (one query).
MAX_CHAIN = 32
_MOD = 1 << 128

StateKeyNids = tuple[int, int]  # (type_nid, state_key_nid)
# A state entry: (event_id, event_nid); event_nid is 0 until the event is written.
StateEntry = tuple[str, int]
NidState = dict[StateKeyNids, StateEntry]
# A delta entry's event: its nid, its event_id (written in the same batch), or 0 = removed.
DeltaRef = int | str


def entry_hash(type_nid: int, state_key_nid: int, event_id: str) -> int:
    # Over the event ID, not its nid: the hash is known before the event is written.
    h = hashlib.blake2b(f"{type_nid},{state_key_nid},{event_id}".encode(), digest_size=16)
    return int.from_bytes(h.digest(), "big")


def state_hash(state: NidState) -> int:
    return sum(entry_hash(t, s, e[0]) for (t, s), e in state.items()) % _MOD


def hash_hex(h: int) -> str:
    return f"{h:032x}"


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """An existing snapshot: its nid, full-state hash, size and chain length."""

    nid: int
    hash: int
    size: int
    chain_len: int


EMPTY_SNAPSHOT = SnapshotInfo(nid=0, hash=0, size=0, chain_len=0)


@dataclass(slots=True)
class NewSnapshot:
    """A snapshot to write: `parent` (existing or written earlier in the same
    transaction) plus `delta`; or a full base when `parent` is None."""

    parent: "SnapshotInfo | NewSnapshot | None"
    delta: list[tuple[int, int, DeltaRef]]
    hash: int
    size: int
    chain_len: int
    nid: int = 0  # assigned when written (or found by hash)

    def info(self) -> SnapshotInfo:
        return SnapshotInfo(self.nid, self.hash, self.size, self.chain_len)


SnapshotRef = SnapshotInfo | NewSnapshot


def _ref(entry: StateEntry) -> DeltaRef:
    return entry[1] if entry[1] else entry[0]


def plan_snapshot(
    parent: SnapshotRef, parent_state: NidState, changes: dict[StateKeyNids, StateEntry | None]
) -> tuple[SnapshotRef, dict[StateKeyNids, StateEntry | None]]:
    """The snapshot for `parent_state` updated with `changes` (None removes).

    Returns (snapshot, effective changes); `parent_state` is not modified (O(delta),
    except when a full base is due). With no effective change, the parent itself."""
    h = parent.hash
    size = parent.size
    delta: list[tuple[int, int, DeltaRef]] = []
    effective: dict[StateKeyNids, StateEntry | None] = {}
    for key, entry in changes.items():
        old = effective[key] if key in effective else parent_state.get(key)
        if (old is None and entry is None) or (
            old is not None and entry is not None and old[0] == entry[0]
        ):
            continue
        if old is not None:
            h -= entry_hash(key[0], key[1], old[0])
            size -= 1
        if entry is not None:
            h += entry_hash(key[0], key[1], entry[0])
            size += 1
        effective[key] = entry
    if not effective:
        return parent, effective
    h %= _MOD
    chain_len = parent.chain_len + 1
    if (isinstance(parent, SnapshotInfo) and parent.nid == 0) or chain_len > MAX_CHAIN:
        # A full base: the whole state, no parent.
        full = dict(parent_state)
        apply_changes(full, effective)
        base = [(t, s, _ref(e)) for (t, s), e in sorted(full.items())]
        return NewSnapshot(parent=None, delta=base, hash=h, size=size, chain_len=0), effective
    delta = [(t, s, 0 if e is None else _ref(e)) for (t, s), e in effective.items()]
    return NewSnapshot(parent=parent, delta=delta, hash=h, size=size, chain_len=chain_len), effective


def apply_changes(state: NidState, changes: dict[StateKeyNids, StateEntry | None]) -> None:
    for key, entry in changes.items():
        if entry is None:
            state.pop(key, None)
        else:
            state[key] = entry


def apply_chain(deltas: list[list[list[int]]]) -> dict[StateKeyNids, int]:
    """Rebuild a state (key -> event_nid) from its base delta and each delta above it."""
    state: dict[StateKeyNids, int] = {}
    for delta in deltas:
        for t, s, e in delta:
            if e:
                state[(t, s)] = e
            else:
                state.pop((t, s), None)
    return state


@dataclass(slots=True)
class RoomInfo:
    """The in-memory view of one room kept by its (single) input worker.

    `state` is the current state by (type, state_key) -> (event_id, event_nid), and
    `nid_state` the same keyed by (type_nid, state_key_nid); both are rebuilt from
    the database on load."""

    room_nid: int
    room_id: str
    room_version: str
    creator: str
    snapshot: SnapshotRef
    state: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)
    nid_state: NidState = field(default_factory=dict)
    # Forward extremities: event_id -> (event_nid, depth)
    extremities: dict[str, tuple[int, int]] = field(default_factory=dict)
    last_sent_event_id: str | None = None
