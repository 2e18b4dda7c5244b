"""Password hashing with bcrypt, run off the event loop (it is slow on purpose)."""
from __future__ import annotations

import asyncio
import base64
import hashlib

import bcrypt

MAX_PASSWORD_LENGTH = 512


def _prepare(password: str) -> bytes:
    # bcrypt reads at most 72 bytes and rejects NUL: longer or NUL-containing
    # passwords are pre-hashed so every byte counts.
    raw = password.encode("utf-8")
    if len(raw) > 72 or b"\0" in raw:
        raw = b"sha256$" + base64.b64encode(hashlib.sha256(raw).digest())
    return raw


def _hash_sync(password: str, rounds: int) -> str:
    return bcrypt.hashpw(_prepare(password), bcrypt.gensalt(rounds=rounds)).decode("ascii")


def _check_sync(password: str, hashed: str) -> bool:
    try:
        return bcrypt.checkpw(_prepare(password), hashed.encode("ascii"))
    except ValueError:
        return False


async def hash_password(password: str, rounds: int) -> str:
    return await asyncio.to_thread(_hash_sync, password, rounds)


async def check_password(password: str, hashed: str) -> bool:
    return await asyncio.to_thread(_check_sync, password, hashed)
