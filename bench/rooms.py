"""Synthetic room DAGs for the state resolution tests and the benchmark.

A `RoomSim` builds real PDUs (correct auth_events selection, prev_events, depth, event
IDs for every room version) on several forks of a room, applies an event to a fork's
state only if it passes the auth rules there (as a server would), and can merge forks
through state resolution. Unsigned: signatures play no part in state resolution.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from libs.events.auth import auth_types_for_event
from libs.events.event import Event
from libs.events.hashes import content_hash_b64
from libs.events.room_versions import EventFormat, RoomVersion
from libs.events.state_res import resolve_state_sync
from libs.events.state_res._common import auth_keys_for_event, passes_auth

StateKey = tuple[str, str]


@dataclass
class Fork:
    state: dict[StateKey, str]
    extremities: list[str]
    depth: int


@dataclass
class RoomSim:
    room_version: RoomVersion
    rng: random.Random
    events: dict[str, Event] = field(default_factory=dict)
    room_id: str = "!room:a.example"
    ts: int = 1_000_000
    _n: int = 0
    # Timestamps jitter inside a small window so ties happen and tie-breaks are tested.
    ts_jitter: int = 3
    ts_step: int = 0

    # ------------------------------------------------------------------ building

    def _next_ts(self) -> int:
        self.ts += self.ts_step + self.rng.randint(0, self.ts_jitter)
        return self.ts

    def build(
        self, fork: Fork | None, etype: str, sender: str, content: dict[str, Any],
        state_key: str | None = None, ts: int | None = None,
    ) -> Event:
        rv = self.room_version
        state = fork.state if fork is not None else {}
        auth: list[str] = []
        if etype != "m.room.create":
            for key in sorted(auth_types_for_event(rv, etype, sender, state_key, content)):
                if key in state:
                    auth.append(state[key])
        prev = list(fork.extremities) if fork is not None else []
        depth = (fork.depth + 1) if fork is not None else 1
        pdu: dict[str, Any] = {
            "type": etype, "sender": sender, "content": content, "depth": depth,
            "origin_server_ts": self._next_ts() if ts is None else ts,
        }
        if state_key is not None:
            pdu["state_key"] = state_key
        if not (rv.hydra and etype == "m.room.create"):
            pdu["room_id"] = self.room_id
        if rv.event_format is EventFormat.V1:
            self._n += 1
            server = sender.split(":", 1)[1]
            pdu["event_id"] = f"${self._n}x{self.rng.randrange(10**6)}:{server}"
            pdu["prev_events"] = [[e, {"sha256": "aaaa"}] for e in prev]
            pdu["auth_events"] = [[e, {"sha256": "aaaa"}] for e in auth]
        else:
            pdu["prev_events"] = prev
            pdu["auth_events"] = auth
        pdu["hashes"] = {"sha256": content_hash_b64(pdu, rv)}
        pdu["signatures"] = {}
        ev = Event(pdu, rv)
        if rv.hydra and etype == "m.room.create":
            self.room_id = ev.room_id
        return ev

    def auth_state(self, fork: Fork, ev: Event) -> dict[StateKey, Event]:
        return {k: self.events[fork.state[k]] for k in auth_keys_for_event(ev) if k in fork.state}

    def send(
        self, fork: Fork, etype: str, sender: str, content: dict[str, Any],
        state_key: str | None = None, *, force: bool = False, ts: int | None = None,
    ) -> Event | None:
        """Build an event on `fork`; apply it if it passes auth there (or `force`)."""
        ev = self.build(fork, etype, sender, content, state_key, ts)
        if not force and not passes_auth(ev, self.auth_state(fork, ev)):
            return None
        self.events[ev.event_id] = ev
        fork.extremities = [ev.event_id]
        fork.depth += 1
        if state_key is not None:
            fork.state[(etype, state_key)] = ev.event_id
        return ev

    def create_room(self, creator: str, users: dict[str, int] | None = None, join_rule: str = "public") -> Fork:
        rv = self.room_version
        content: dict[str, Any] = {"room_version": rv.identifier}
        if not rv.implicit_room_creator:
            content["creator"] = creator
        create = self.build(None, "m.room.create", creator, content, "")
        self.events[create.event_id] = create
        fork = Fork({("m.room.create", ""): create.event_id}, [create.event_id], 1)
        self.send(fork, "m.room.member", creator, {"membership": "join"}, creator, force=True)
        levels = dict(users or {})
        if not rv.hydra:
            levels.setdefault(creator, 100)
        self.send(fork, "m.room.power_levels", creator, power_levels(levels), "", force=True)
        self.send(fork, "m.room.join_rules", creator, {"join_rule": join_rule}, "", force=True)
        return fork

    def branch(self, fork: Fork) -> Fork:
        return Fork(dict(fork.state), list(fork.extremities), fork.depth)

    def merge(self, forks: list[Fork]) -> Fork:
        """A new fork whose state is the resolution of `forks` (no event sent yet: the
        next event sent on it has every fork's extremities as prev_events)."""
        state = resolve_state_sync(self.room_version, [f.state for f in forks], self.events)
        ext: list[str] = []
        for f in forks:
            ext.extend(e for e in f.extremities if e not in ext)
        return Fork(state, ext, max(f.depth for f in forks))

    # ------------------------------------------------------------------ random activity

    def random_event(self, fork: Fork, users: list[str]) -> Event | None:
        """One random state change on `fork` by a random user (dropped if unauthorised)."""
        rng = self.rng
        sender = rng.choice(users)
        target = rng.choice(users)
        kind = rng.random()
        if kind < 0.35:
            membership = rng.choice(["join", "join", "leave", "ban", "invite", "leave"])
            if membership == "join":
                target = sender
            return self.send(fork, "m.room.member", sender, {"membership": membership}, target)
        if kind < 0.55:
            cur = self.events.get(fork.state.get(("m.room.power_levels", ""), ""))
            levels = dict(cur.content.get("users", {})) if cur is not None else {}
            levels[target] = rng.choice([0, 0, 50, 75, 100])
            extra = {"ban": rng.choice([50, 50, 75]), "state_default": rng.choice([0, 50])}
            return self.send(fork, "m.room.power_levels", sender, power_levels(levels, **extra), "")
        if kind < 0.65:
            jr = rng.choice(["public", "invite"])
            return self.send(fork, "m.room.join_rules", sender, {"join_rule": jr}, "")
        key = rng.choice(["m.room.topic", "m.room.name", "m.room.history_visibility"])
        return self.send(fork, key, sender, {"v": rng.randrange(1000)}, "")


def power_levels(users: dict[str, int], **extra: int) -> dict[str, Any]:
    content: dict[str, Any] = {
        "users": dict(users), "users_default": 0, "events_default": 0, "state_default": 50,
        "ban": 50, "kick": 50, "redact": 50, "invite": 0,
        "events": {"m.room.power_levels": 100, "m.room.join_rules": 50},
    }
    content.update(extra)
    return content


USERS = ["@alice:a.example", "@bob:b.example", "@carol:c.example", "@dave:a.example", "@eve:b.example"]


def random_scenario(room_version: RoomVersion, seed: int, *, forks: int = 3, steps: int = 12) -> tuple[
    RoomSim, list[dict[StateKey, str]]
]:
    """A room with random concurrent activity on `forks` branches, some nested and some
    merged back; returns the simulator and the state sets of the final branches."""
    rng = random.Random(seed)
    sim = RoomSim(room_version, rng)
    creator = USERS[0]
    main = sim.create_room(creator, {USERS[1]: rng.choice([50, 100]), USERS[2]: rng.choice([0, 50])})
    for u in USERS[1:]:
        sim.send(main, "m.room.member", u, {"membership": "join"}, u)
    for _ in range(rng.randint(0, 4)):
        sim.random_event(main, USERS)
    branches = [sim.branch(main) for _ in range(forks)]
    for _ in range(steps):
        i = rng.randrange(len(branches))
        r = rng.random()
        if r < 0.08 and len(branches) > 1:
            j = rng.randrange(len(branches))
            if j != i:
                merged = sim.merge([branches[i], branches[j]])
                sim.random_event(merged, USERS) or sim.send(
                    merged, "m.room.message", creator, {"body": "merge"}, force=True)
                branches[i] = merged
            continue
        if r < 0.15:
            branches.append(sim.branch(branches[i]))
            continue
        for _ in range(3):  # a few tries: many random events are unauthorised
            if sim.random_event(branches[i], USERS) is not None:
                break
    return sim, [b.state for b in branches]
