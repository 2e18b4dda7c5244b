"""Server keys: ours (with rotation), a persisted cache of remote servers' keys, fetching
from the server itself and from notaries, and the notary answers we serve.

Validity rules: a cached key is cached until its response's `valid_until_ts` (old keys:
their `expired_ts`). Lookups take `at_ts`: the key must have been valid then —
`now` for request authentication, the event's `origin_server_ts` for events in room
v5+; None (room v1-v4 events) accepts any key we have ever seen. When no cached key
satisfies the lookup we fetch (direct first, then each notary), at most once per
`refetch_interval_ms` per server, concurrent lookups sharing one fetch.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

from libs.events.room_versions import RoomVersion
from libs.events.server_keys import OldVerifyKey, ServerKeys, ServerKeysError, build_server_keys, verify_server_keys
from libs.events.signing import (ED25519, KeyFormatError, SignatureError, SigningKey, VerifyKey, required_signers,
                                 sign_json, verify_signed_json)
from libs.events.unpadded_base64 import Base64Error, decode_base64, encode_base64

from .storage.store import FederationStore

log = logging.getLogger(__name__)

MAX_KEY_RESPONSE_BYTES = 512 * 1024


def _now_ms() -> int:
    return int(time.time() * 1000)


def parse_old_signing_keys(lines: Sequence[str]) -> list[OldVerifyKey]:
    """Config `federation.old_signing_keys`: ``"ed25519:<version> <b64 public key> <expired_ts>"``."""
    out: list[OldVerifyKey] = []
    for i, line in enumerate(lines):
        parts = line.split()
        if len(parts) != 3 or not parts[0].startswith(ED25519 + ":") or not parts[2].isdigit():
            raise KeyFormatError(f"old_signing_keys[{i}]: expected 'ed25519:<version> <public key> <expired_ts>'")
        try:
            raw = decode_base64(parts[1])
        except Base64Error:
            raise KeyFormatError(f"old_signing_keys[{i}]: key is not base64") from None
        if len(raw) != 32:
            raise KeyFormatError(f"old_signing_keys[{i}]: an ed25519 public key is 32 bytes")
        out.append(OldVerifyKey(parts[0], raw, int(parts[2])))
    return out


@dataclass
class OwnKeys:
    server_name: str
    signing_keys: list[SigningKey]
    old_keys: list[OldVerifyKey] = field(default_factory=list)
    validity_ms: int = 24 * 3600 * 1000

    def response(self, now_ms: int) -> dict[str, Any]:
        return build_server_keys(self.server_name, self.signing_keys, now_ms + self.validity_ms, self.old_keys)

    def verify_keys(self, now_ms: int) -> dict[str, VerifyKey]:
        keys = {o.key_id: VerifyKey(o.key, o.expired_ts) for o in self.old_keys}
        for k in self.signing_keys:
            keys[k.key_id] = k.verify_key(now_ms + self.validity_ms)
        return keys


class KeyFetcher(Protocol):
    name: str

    async def fetch(self, server_name: str, key_ids: Sequence[str], min_valid_until_ts: int
                    ) -> list[tuple[dict[str, Any], ServerKeys]]:
        """Verified key responses for `server_name` (may be empty); raises on transport errors."""
        ...


class JSONRequester(Protocol):
    async def get_json(self, destination: str, path: str, query: Mapping[str, Any] | None = None,
                       **kw: Any) -> Any: ...

    async def post_json(self, destination: str, path: str, content: Any, **kw: Any) -> Any: ...


class DirectKeyFetcher:
    name = "direct"

    def __init__(self, client: JSONRequester) -> None:
        self.client = client

    async def fetch(self, server_name: str, key_ids: Sequence[str], min_valid_until_ts: int
                    ) -> list[tuple[dict[str, Any], ServerKeys]]:
        body = await self.client.get_json(server_name, "/_matrix/key/v2/server", signed=False,
                                          max_bytes=MAX_KEY_RESPONSE_BYTES)
        return [(body, verify_server_keys(body, server_name))]


class NotaryKeyFetcher:
    """Asks a trusted notary (`/_matrix/key/v2/query`); each answer must be self-signed by
    the server and signed by the notary with a key we fetched from the notary itself."""

    def __init__(self, client: JSONRequester, notary: str, keyring: KeyRing) -> None:
        self.client = client
        self.notary = notary
        self.keyring = keyring
        self.name = f"notary:{notary}"

    async def fetch(self, server_name: str, key_ids: Sequence[str], min_valid_until_ts: int
                    ) -> list[tuple[dict[str, Any], ServerKeys]]:
        if server_name == self.notary:
            return []
        criteria = {k: {"minimum_valid_until_ts": min_valid_until_ts} for k in key_ids} or {}
        body = await self.client.post_json(self.notary, "/_matrix/key/v2/query",
                                           {"server_keys": {server_name: criteria}},
                                           max_bytes=MAX_KEY_RESPONSE_BYTES)
        items = body.get("server_keys") if isinstance(body, dict) else None
        if not isinstance(items, list):
            return []
        notary_keys = await self.keyring.get_verify_keys(self.notary, None, at_ts=self.keyring.clock_ms())
        out: list[tuple[dict[str, Any], ServerKeys]] = []
        for item in items[:20]:
            try:
                sk = verify_server_keys(item, server_name)
                verify_signed_json(item, self.notary, notary_keys)
            except (ServerKeysError, SignatureError) as e:
                log.info("notary %s gave a bad key response for %s: %s", self.notary, server_name, e)
                continue
            out.append((item, sk))
        return out


class KeyRing:
    def __init__(self, store: FederationStore, own: OwnKeys, fetchers: Sequence[KeyFetcher] = (), *,
                 clock_ms: Callable[[], int] = _now_ms, refetch_interval_ms: int = 60_000) -> None:
        self.store = store
        self.own = own
        self.fetchers: list[KeyFetcher] = list(fetchers)
        self.clock_ms = clock_ms
        self.refetch_interval_ms = refetch_interval_ms
        self._last_fetch: dict[str, int] = {}
        self._inflight: dict[str, asyncio.Task[None]] = {}

    @staticmethod
    def _usable(valid_until: int, at_ts: int | None) -> bool:
        return at_ts is None or valid_until >= at_ts

    async def _cached(self, server: str, key_ids: Iterable[str] | None, at_ts: int | None) -> dict[str, VerifyKey]:
        stored = await self.store.get_keys(server)
        out: dict[str, VerifyKey] = {}
        wanted = set(key_ids) if key_ids is not None else None
        for kid, sk in stored.items():
            if wanted is not None and kid not in wanted:
                continue
            if self._usable(sk.usable_until_ts, at_ts):
                try:
                    out[kid] = VerifyKey.from_base64(sk.verify_key, sk.usable_until_ts)
                except KeyFormatError:
                    continue
        return out

    async def get_verify_keys(self, server: str, key_ids: Iterable[str] | None, *,
                              at_ts: int | None = None) -> dict[str, VerifyKey]:
        """Keys of `server` (all, or those in `key_ids`) valid at `at_ts`; fetches when the
        cache cannot answer. Missing keys are simply absent from the result."""
        if server == self.own.server_name:
            own = self.own.verify_keys(self.clock_ms())
            return {k: v for k, v in own.items()
                    if (key_ids is None or k in set(key_ids)) and self._usable(v.valid_until_ts or 0, at_ts)}
        wanted = list(key_ids) if key_ids is not None else None
        have = await self._cached(server, wanted, at_ts)
        if have and (wanted is None or all(k in have for k in wanted)):
            return have
        await self._fetch(server, wanted or [], at_ts if at_ts is not None else self.clock_ms())
        return await self._cached(server, wanted, at_ts)

    async def get_verify_key(self, server: str, key_id: str, *, at_ts: int | None = None) -> VerifyKey | None:
        return (await self.get_verify_keys(server, [key_id], at_ts=at_ts)).get(key_id)

    async def keys_for_event(self, pdu: Mapping[str, Any], version: RoomVersion
                             ) -> dict[str, dict[str, VerifyKey]]:
        """Keys of every server that must have signed `pdu`, for `verify_event_signatures`."""
        at_ts: int | None = None
        if version.enforce_key_validity:
            ts = pdu.get("origin_server_ts")
            at_ts = ts if isinstance(ts, int) and not isinstance(ts, bool) else None
        sigs = pdu.get("signatures")
        out: dict[str, dict[str, VerifyKey]] = {}
        for server in required_signers(pdu, version):
            entry = sigs.get(server) if isinstance(sigs, dict) else None
            kids = [k for k in entry if isinstance(k, str) and k.startswith(ED25519 + ":")][:8] \
                if isinstance(entry, dict) else []
            if kids:
                out[server] = await self.get_verify_keys(server, kids, at_ts=at_ts)
        return out

    async def _fetch(self, server: str, key_ids: Sequence[str], min_valid: int) -> None:
        task = self._inflight.get(server)
        if task is None:
            last = self._last_fetch.get(server)
            if last is not None and self.clock_ms() - last < self.refetch_interval_ms:
                return
            self._last_fetch[server] = self.clock_ms()
            task = asyncio.create_task(self._fetch_now(server, list(key_ids), min_valid))
            self._inflight[server] = task
            task.add_done_callback(lambda _t: self._inflight.pop(server, None))
        await asyncio.shield(task)

    async def _fetch_now(self, server: str, key_ids: list[str], min_valid: int) -> None:
        for fetcher in self.fetchers:
            try:
                results = await fetcher.fetch(server, key_ids, min_valid)
            except Exception as e:  # transport errors, bad bodies: try the next source
                log.info("fetching keys of %s via %s failed: %s", server, fetcher.name, e)
                continue
            got: set[str] = set()
            for body, sk in results:
                await self.store_response(body, sk)
                got |= set(sk.all_keys())
            if results and (not key_ids or all(k in got for k in key_ids)):
                return

    async def store_response(self, body: dict[str, Any], sk: ServerKeys) -> None:
        keys: list[tuple[str, str, int | None]] = [
            (kid, encode_base64(vk.key), None) for kid, vk in sk.verify_keys.items()]
        keys += [(kid, encode_base64(vk.key), vk.valid_until_ts) for kid, vk in sk.old_verify_keys.items()
                 if kid not in sk.verify_keys]
        # Notaries answer with their own signature added: keep only the server's own one.
        own_sig = body.get("signatures", {}).get(sk.server_name, {})
        clean = {**body, "signatures": {sk.server_name: own_sig}}
        await self.store.store_key_response(sk.server_name, clean, sk.valid_until_ts, keys, self.clock_ms())

    # ---- notary ---------------------------------------------------------------------

    async def notary_response(self, server: str, min_valid_until_ts: int | None) -> list[dict[str, Any]]:
        """What we answer on /_matrix/key/v2/query for one server: its newest response we
        have (fetched when missing or older than asked), countersigned by us."""
        now = self.clock_ms()
        if server == self.own.server_name:
            return [self.own.response(now)]
        want = min_valid_until_ts if min_valid_until_ts is not None else now
        cached = await self.store.get_key_response(server)
        if cached is None or cached[1] < want:
            await self._fetch(server, [], want)
            cached = await self.store.get_key_response(server)
        if cached is None:
            return []
        body = cached[0]
        for key in self.own.signing_keys:
            sign_json(body, self.own.server_name, key)
        return [body]
