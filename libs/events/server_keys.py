"""The server key object served at ``GET /_matrix/key/v2/server`` (and relayed by
notary servers), and its verification.

Shape: ``{"server_name", "valid_until_ts", "verify_keys": {key_id: {"key"}},
"old_verify_keys": {key_id: {"key", "expired_ts"}}, "signatures"}``. A response is only
trusted if it is signed by the server itself with every key it lists in
``verify_keys`` (so a response cannot smuggle in a key it does not hold).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .signing import ED25519, KeyFormatError, SignatureError, SigningKey, VerifyKey, sign_json, verify_signed_json


class ServerKeysError(ValueError):
    errcode = "M_UNAUTHORIZED"


@dataclass(frozen=True, slots=True)
class OldVerifyKey:
    key_id: str
    key: bytes
    expired_ts: int


@dataclass(frozen=True, slots=True)
class ServerKeys:
    """A verified key response: what the server said, made into VerifyKeys."""

    server_name: str
    valid_until_ts: int
    verify_keys: dict[str, VerifyKey] = field(default_factory=dict)
    old_verify_keys: dict[str, VerifyKey] = field(default_factory=dict)

    def all_keys(self) -> dict[str, VerifyKey]:
        """Every key, for `verify_event_signatures`: current keys carry valid_until_ts,
        old keys their expired_ts."""
        return {**self.old_verify_keys, **self.verify_keys}


def build_server_keys(
    server_name: str,
    signing_keys: Sequence[SigningKey],
    valid_until_ts: int,
    old_keys: Sequence[OldVerifyKey] = (),
) -> dict[str, Any]:
    """The signed response body for ``/_matrix/key/v2/server``."""
    from .unpadded_base64 import encode_base64

    body: dict[str, Any] = {
        "server_name": server_name,
        "valid_until_ts": valid_until_ts,
        "verify_keys": {k.key_id: {"key": k.public_key_b64} for k in signing_keys},
        "old_verify_keys": {o.key_id: {"key": encode_base64(o.key), "expired_ts": o.expired_ts} for o in old_keys},
    }
    for k in signing_keys:
        sign_json(body, server_name, k)
    return body


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def verify_server_keys(body: Any, expected_server: str | None = None, *, now_ms: int | None = None) -> ServerKeys:
    """Parse and check a key response. Raises ServerKeysError if it is malformed, for
    another server, not self-signed by every verify key, or (with `now_ms`) expired."""
    if not isinstance(body, dict):
        raise ServerKeysError("key response must be an object")
    name = body.get("server_name")
    if not isinstance(name, str) or not name:
        raise ServerKeysError("missing server_name")
    if expected_server is not None and name != expected_server:
        raise ServerKeysError(f"key response is for {name}, not {expected_server}")
    vut = body.get("valid_until_ts")
    if not _int(vut):
        raise ServerKeysError("valid_until_ts must be an integer")
    if now_ms is not None and vut < now_ms:
        raise ServerKeysError("key response has expired")
    raw_keys = body.get("verify_keys")
    if not isinstance(raw_keys, dict) or not raw_keys:
        raise ServerKeysError("verify_keys must be a non-empty object")
    verify_keys: dict[str, VerifyKey] = {}
    try:
        for key_id, entry in raw_keys.items():
            if not key_id.startswith(ED25519 + ":"):
                continue  # algorithms we do not know are ignored
            if not isinstance(entry, dict):
                raise ServerKeysError(f"bad verify key {key_id}")
            verify_keys[key_id] = VerifyKey.from_base64(entry.get("key"), vut)
        old: dict[str, VerifyKey] = {}
        raw_old = body.get("old_verify_keys", {})
        if not isinstance(raw_old, dict):
            raise ServerKeysError("old_verify_keys must be an object")
        for key_id, entry in raw_old.items():
            if not key_id.startswith(ED25519 + ":"):
                continue
            if not isinstance(entry, dict) or not _int(entry.get("expired_ts")):
                raise ServerKeysError(f"bad old verify key {key_id}")
            old[key_id] = VerifyKey.from_base64(entry.get("key"), entry["expired_ts"])
    except KeyFormatError as e:
        raise ServerKeysError(str(e)) from None
    if not verify_keys:
        raise ServerKeysError("no ed25519 verify key")
    sigs = body.get("signatures")
    own = sigs.get(name) if isinstance(sigs, dict) else None
    if not isinstance(own, dict):
        raise ServerKeysError("key response is not signed by its server")
    for key_id, key in verify_keys.items():
        if key_id not in own:
            raise ServerKeysError(f"key response is not signed with {key_id}")
        try:
            verify_signed_json(body, name, {key_id: VerifyKey(key.key)})
        except SignatureError as e:
            raise ServerKeysError(str(e)) from None
    return ServerKeys(name, vut, verify_keys, old)


def keys_for_servers(responses: Mapping[str, ServerKeys]) -> dict[str, dict[str, VerifyKey]]:
    """{server: {key_id: VerifyKey}} for `signing.verify_event_signatures`."""
    return {name: sk.all_keys() for name, sk in responses.items()}
