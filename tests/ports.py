"""Free TCP ports for servers that tests start.

Ports come from below the kernel's ephemeral range: a port taken from inside it (bind to
port 0) can be grabbed by any outgoing connection (to Kafka, PostgreSQL, another service)
between the moment the test picks it and the moment the server binds it — which made the
cluster fixture fail now and then with "a process exited during start-up"."""
from __future__ import annotations

import random
import socket

_FLOOR = 20000


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_block(n: int = 1) -> int:
    """A base port such that base .. base+n-1 are free now and outside the ephemeral range."""
    high = _ephemeral_low() - n
    rng = random.Random()
    if high > _FLOOR + 100:
        for _ in range(200):
            base = rng.randrange(_FLOOR, high)
            if all(_is_free(p) for p in range(base, base + n)):
                return base
    # No room below the ephemeral range on this machine: fall back to what the kernel hands out.
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + n < 65000 and all(_is_free(p) for p in range(base, base + n)):
            return base
    raise RuntimeError(f"no block of {n} free ports")


def free_port() -> int:
    return free_port_block(1)
