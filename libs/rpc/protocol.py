"""Reading an internal-API Protocol: its methods, their parameters and types."""
from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

# Query methods (safe to retry on any transport failure) are recognised by name;
# callers can pass an explicit set instead.
IDEMPOTENT_PREFIXES = ("get_", "query_", "is_", "list_", "resolve_", "check_password", "current_", "wait_for_",
                       "room_exists", "localpart_error", "server_keys")


@dataclass(frozen=True)
class MethodSpec:
    name: str
    params: tuple[tuple[str, Any, Any], ...]  # (name, type, default or inspect.Parameter.empty)
    returns: Any

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Positional + keyword call arguments → {name: value} with defaults filled in."""
        out: dict[str, Any] = {}
        names = [p[0] for p in self.params]
        if len(args) > len(names):
            raise TypeError(f"{self.name}() takes {len(names)} arguments")
        for n, v in zip(names, args):
            out[n] = v
        for k, v in kwargs.items():
            if k not in names:
                raise TypeError(f"{self.name}() got an unexpected argument {k!r}")
            if k in out:
                raise TypeError(f"{self.name}() got multiple values for {k!r}")
            out[k] = v
        for n, _tp, default in self.params:
            if n not in out:
                if default is inspect.Parameter.empty:
                    raise TypeError(f"{self.name}() missing argument {n!r}")
                out[n] = default
        return out


@lru_cache(maxsize=None)
def protocol_methods(protocol: type) -> dict[str, MethodSpec]:
    """Every public async method declared on `protocol` (and its Protocol bases)."""
    specs: dict[str, MethodSpec] = {}
    for klass in reversed(protocol.__mro__):
        if klass is object or klass is typing.Protocol or klass.__module__ == "typing":
            continue
        for name, fn in vars(klass).items():
            if name.startswith("_") or not inspect.iscoroutinefunction(fn):
                continue
            hints = typing.get_type_hints(fn)
            sig = inspect.signature(fn)
            params = tuple(
                (p.name, hints.get(p.name, Any), p.default)
                for p in list(sig.parameters.values())[1:]  # drop self
            )
            specs[name] = MethodSpec(name, params, hints.get("return", Any))
    return specs


def is_idempotent(name: str) -> bool:
    return name.startswith(IDEMPOTENT_PREFIXES)
