"""ed25519 signing and verification of JSON objects and events (spec appendix
"Signing JSON", server-server "Signing events" / "Validating hashes and signatures").

Keys are plain data: a `SigningKey` (key ID + seed) signs; a `VerifyKey` (32 public
bytes + the time until which it may be trusted) verifies. Lookup of remote keys is the
caller's job: pass what you know as ``{server_name: {key_id: VerifyKey}}``.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import nacl.bindings
import nacl.exceptions
import nacl.signing

from .canonical_json import CanonicalJSONError, encode_canonical_json, encode_canonical_json_prechecked
from .hashes import check_content_hash, compute_content_hash
from .redaction import redact
from .room_versions import EventFormat, RoomVersion
from .unpadded_base64 import Base64Error, decode_base64, encode_base64

ED25519 = "ed25519"
# Key versions are [a-zA-Z0-9_] in the spec's key ID grammar.
_KEY_VERSION = re.compile(r"^[A-Za-z0-9_]+$")


class SignatureError(ValueError):
    """A signature is missing or does not verify (M_FORBIDDEN at the HTTP edge)."""

    errcode = "M_FORBIDDEN"


class KeyFormatError(ValueError):
    """A signing or verify key could not be read."""

    errcode = "M_BAD_JSON"


@dataclass(frozen=True, slots=True, eq=False)
class SigningKey:
    """An ed25519 signing key: `key_id` is ``"ed25519:<version>"``."""

    key_id: str
    seed: bytes
    _nacl: nacl.signing.SigningKey = field(repr=False)
    # libsodium's 64-byte secret key (seed + public key): signing calls the binding
    # directly, skipping PyNaCl's wrapper objects.
    _sk: bytes = field(default=b"", repr=False)

    @classmethod
    def from_seed(cls, seed: bytes, version: str) -> SigningKey:
        if len(seed) != 32:
            raise KeyFormatError("an ed25519 seed is 32 bytes")
        if not _KEY_VERSION.match(version):
            raise KeyFormatError(f"bad key version {version!r}")
        seed = bytes(seed)
        _pk, sk = nacl.bindings.crypto_sign_seed_keypair(seed)
        return cls(f"{ED25519}:{version}", seed, nacl.signing.SigningKey(seed), sk)

    @property
    def version(self) -> str:
        return self.key_id.split(":", 1)[1]

    @property
    def public_key(self) -> bytes:
        return bytes(self._nacl.verify_key)

    @property
    def public_key_b64(self) -> str:
        return encode_base64(self.public_key)

    def sign(self, data: bytes) -> bytes:
        """The 64-byte ed25519 signature of `data` (libsodium; releases the GIL)."""
        if self._sk:
            return nacl.bindings.crypto_sign(data, self._sk)[:64]
        return self._nacl.sign(data).signature

    def verify_key(self, valid_until_ts: int | None = None) -> VerifyKey:
        return VerifyKey(self.public_key, valid_until_ts)


@dataclass(frozen=True, slots=True)
class VerifyKey:
    """A public key. ``valid_until_ts`` (ms) is the key's `valid_until_ts` for a current
    key or its `expired_ts` for an old one; None means "no limit known to apply"."""

    key: bytes
    valid_until_ts: int | None = None

    @classmethod
    def from_base64(cls, b64: str, valid_until_ts: int | None = None) -> VerifyKey:
        try:
            raw = decode_base64(b64)
        except (Base64Error, AttributeError, TypeError):
            raise KeyFormatError("verify key is not base64") from None
        if len(raw) != 32:
            raise KeyFormatError("an ed25519 public key is 32 bytes")
        return cls(raw, valid_until_ts)


def generate_signing_key(version: str | None = None) -> SigningKey:
    """A fresh key; the version defaults to a random 6-character string."""
    if version is None:
        version = "a_" + encode_base64(os.urandom(3), urlsafe=True).replace("-", "_")
    return SigningKey.from_seed(os.urandom(32), version)


def parse_signing_key_file(text: str) -> list[SigningKey]:
    """Read the homeserver key file format: one ``ed25519 <version> <b64 seed>`` per line.

    (Also accepts ``ed25519 ed25519:<version> <seed>``, a common variant.)"""
    keys: list[SigningKey] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 3 or parts[0] != ED25519:
            raise KeyFormatError(f"line {lineno}: expected 'ed25519 <key_id> <base64 seed>'")
        version = parts[1]
        if version.startswith(ED25519 + ":"):
            version = version[len(ED25519) + 1 :]
        try:
            seed = decode_base64(parts[2])
        except Base64Error:
            raise KeyFormatError(f"line {lineno}: seed is not base64") from None
        keys.append(SigningKey.from_seed(seed, version))
    if not keys:
        raise KeyFormatError("no signing key found")
    return keys


def format_signing_key(key: SigningKey) -> str:
    return f"{ED25519} {key.version} {encode_base64(key.seed)}\n"


# --- JSON objects ------------------------------------------------------------------


def _signing_bytes(obj: Mapping[str, Any], strict: bool = True) -> bytes:
    if "signatures" in obj or "unsigned" in obj:
        obj = {k: v for k, v in obj.items() if k != "signatures" and k != "unsigned"}
    return encode_canonical_json(obj, strict=strict)


def compute_signature(obj: Mapping[str, Any], key: SigningKey) -> str:
    """The unpadded-base64 signature of `obj` (without signatures/unsigned)."""
    return encode_base64(key.sign(_signing_bytes(obj)))


def sign_json(obj: dict[str, Any], signing_name: str, key: SigningKey) -> dict[str, Any]:
    """Add `key`'s signature under ``signatures[signing_name]``; mutates and returns `obj`."""
    sig = compute_signature(obj, key)
    sigs = obj.get("signatures")
    if not isinstance(sigs, dict):
        sigs = {}
    else:
        sigs = {k: dict(v) if isinstance(v, dict) else v for k, v in sigs.items()}
    entry = sigs.get(signing_name)
    if not isinstance(entry, dict):
        entry = sigs[signing_name] = {}
    entry[key.key_id] = sig
    obj["signatures"] = sigs
    return obj


def _verify_raw(message: bytes, sig_b64: Any, key: VerifyKey) -> bool:
    """One ed25519 check. Pure function of its arguments (safe in worker threads: the
    libsodium call releases the GIL)."""
    if not isinstance(sig_b64, str):
        return False
    try:
        sig = decode_base64(sig_b64)
    except Base64Error:
        return False
    if len(sig) != 64:
        return False
    try:
        nacl.bindings.crypto_sign_open(sig + message, key.key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError, TypeError):
        return False
    return True


# verify(message, signature_b64, key, signing_name, key_id) -> signature is valid
_Verifier = Callable[[bytes, Any, VerifyKey, str, str], bool]


def _verify_now(message: bytes, sig_b64: Any, key: VerifyKey, signing_name: str, key_id: str) -> bool:
    return _verify_raw(message, sig_b64, key)


def verify_json_signature(obj: Mapping[str, Any], signing_name: str, key_id: str, key: VerifyKey,
                          *, lenient_numbers: bool = False) -> None:
    """Raise SignatureError unless `obj` carries a valid signature by (signing_name, key_id).

    lenient_numbers: an object with floats or big integers is encoded as Python's json
    does instead of being refused (request signatures: the body may carry a PDU that is
    invalid for its room version, which must then be refused as such, not as unsigned)."""
    sigs = obj.get("signatures")
    entry = sigs.get(signing_name) if isinstance(sigs, dict) else None
    if not isinstance(entry, dict) or key_id not in entry:
        raise SignatureError(f"no signature from {signing_name} with {key_id}")
    try:
        message = _signing_bytes(obj)
    except CanonicalJSONError as e:
        if not lenient_numbers:
            raise SignatureError(f"cannot encode the signed object: {e}") from None
        try:
            message = _signing_bytes(obj, strict=False)
        except (CanonicalJSONError, ValueError) as e2:
            raise SignatureError(f"cannot encode the signed object: {e2}") from None
    if not _verify_raw(message, entry[key_id], key):
        raise SignatureError(f"bad signature from {signing_name} with {key_id}")


def verify_signed_json(
    obj: Mapping[str, Any],
    signing_name: str,
    keys: Mapping[str, VerifyKey],
    *,
    at_ts: int | None = None,
    strict: bool = True,
) -> str:
    """Check `signing_name` signed `obj` (spec "Checking for a Signature").

    Signatures by algorithms other than ed25519 are ignored; every remaining one whose
    key is known must verify, and at least one must. With `at_ts`, a key only counts if
    its ``valid_until_ts`` is unset or >= at_ts. Returns the key ID that verified.
    """

    def message() -> bytes:
        try:
            return _signing_bytes(obj, strict=strict)
        except CanonicalJSONError as e:
            raise SignatureError(f"cannot encode the signed object: {e}") from None

    return _check_signed(obj.get("signatures"), signing_name, keys, at_ts, message, _verify_now)


def _check_signed(
    sigs: Any,
    signing_name: str,
    keys: Mapping[str, VerifyKey],
    at_ts: int | None,
    message: Callable[[], bytes],
    verify: _Verifier,
) -> str:
    """The rules of `verify_signed_json`, with the signed bytes produced by `message`
    (called at most once, only once a signature is there to check) and each ed25519
    check done by `verify` (the batch APIs record the checks, then run them in threads)."""
    entry = sigs.get(signing_name) if isinstance(sigs, dict) else None
    if not isinstance(entry, dict) or not entry:
        raise SignatureError(f"not signed by {signing_name}")
    candidates = [k for k in entry if isinstance(k, str) and k.startswith(ED25519 + ":")]
    if not candidates:
        raise SignatureError(f"no ed25519 signature from {signing_name}")
    data = message()
    verified: str | None = None
    expired: list[str] = []
    for key_id in sorted(candidates):
        key = keys.get(key_id)
        if key is None:
            continue
        if at_ts is not None and key.valid_until_ts is not None and key.valid_until_ts < at_ts:
            expired.append(key_id)
            continue
        if not verify(data, entry[key_id], key, signing_name, key_id):
            raise SignatureError(f"bad signature from {signing_name} with {key_id}")
        verified = key_id
    if verified is None:
        if expired:
            raise SignatureError(f"key {expired[0]} of {signing_name} was not valid at {at_ts}")
        raise SignatureError(f"no known key for the signatures of {signing_name}")
    return verified


# --- events -------------------------------------------------------------------------


def _domain(identifier: Any) -> str | None:
    if not isinstance(identifier, str) or ":" not in identifier:
        return None
    return identifier.split(":", 1)[1] or None


def required_signers(pdu: Mapping[str, Any], version: RoomVersion) -> set[str]:
    """Servers whose signature an incoming PDU must carry (server-server spec,
    "Validating hashes and signatures on received events"):

    * the sender's server — except for an invite made from a third-party invite, whose
      sender is the original inviter but which may be sent by another server;
    * room versions 1 and 2: the server named in the event ID;
    * restricted joins (v8+): the server of ``join_authorised_via_users_server``.
    """
    servers: set[str] = set()
    content = pdu.get("content")
    if not isinstance(content, dict):
        content = {}
    is_member = pdu.get("type") == "m.room.member"
    membership = content.get("membership") if is_member else None
    if not (membership == "invite" and "third_party_invite" in content):
        d = _domain(pdu.get("sender"))
        if d is None:
            raise SignatureError("event has no valid sender")
        servers.add(d)
    if version.event_format is EventFormat.V1:
        d = _domain(pdu.get("event_id"))
        if d is None:
            raise SignatureError("event has no valid event_id")
        servers.add(d)
    if version.restricted_join_rule and membership == "join" and "join_authorised_via_users_server" in content:
        d = _domain(content["join_authorised_via_users_server"])
        if d is None:
            raise SignatureError("bad join_authorised_via_users_server")
        servers.add(d)
    return servers


def _event_signing_object(pdu: Mapping[str, Any], version: RoomVersion) -> dict[str, Any]:
    pruned = redact(pdu, version)  # a new dict; the PDU is untouched
    pruned.pop("signatures", None)
    pruned.pop("unsigned", None)
    return pruned


def compute_event_signature(pdu: Mapping[str, Any], version: RoomVersion, key: SigningKey) -> str:
    """The signature of the event's redacted form, as the spec's "Signing events" defines."""
    strict = version.strict_canonicaljson
    return encode_base64(key.sign(encode_canonical_json(_event_signing_object(pdu, version), strict=strict)))


def add_hashes_and_signature(
    pdu: dict[str, Any], version: RoomVersion, server_name: str, key: SigningKey
) -> dict[str, Any]:
    """Set ``hashes.sha256`` (content hash) then add our signature; mutates and returns."""
    hash_and_sign(pdu, version, server_name, key)
    return pdu


def hash_and_sign(pdu: dict[str, Any], version: RoomVersion, server_name: str, key: SigningKey) -> bytes:
    """`add_hashes_and_signature`, returning the signed bytes (the canonical redacted
    form without signatures/unsigned). For a v3+ PDU without `event_id` or `unsigned`
    these are exactly the reference hash input: sha256 of them gives the event ID
    without redacting and encoding the event a second time."""
    pdu["hashes"] = {"sha256": encode_base64(compute_content_hash(pdu, version))}
    message = _encode_after_hash(_event_signing_object(pdu, version), version)
    _attach_signature(pdu, server_name, key.key_id, key.sign(message))
    return message


def _encode_after_hash(signing_object: dict[str, Any], version: RoomVersion) -> bytes:
    # Right after the content hash, every leaf of the redacted form has passed a strict
    # encoding (it is a subset of the hashed fields plus the new `hashes`): skip the
    # float scan the second time.
    if version.strict_canonicaljson:
        return encode_canonical_json_prechecked(signing_object)
    return encode_canonical_json(signing_object, strict=False)


def _attach_signature(pdu: dict[str, Any], server_name: str, key_id: str, sig: bytes) -> None:
    old = pdu.get("signatures")
    sigs = {k: dict(v) for k, v in old.items() if isinstance(v, dict)} if isinstance(old, dict) else {}
    sigs.setdefault(server_name, {})[key_id] = encode_base64(sig)
    pdu["signatures"] = sigs


def sign_event(pdu: dict[str, Any], version: RoomVersion, server_name: str, key: SigningKey) -> dict[str, Any]:
    """Add `server_name`'s signature to a PDU that already has its `hashes`; mutates and returns."""
    strict = version.strict_canonicaljson
    _attach_signature(pdu, server_name, key.key_id,
                      key.sign(encode_canonical_json(_event_signing_object(pdu, version), strict=strict)))
    return pdu


def verify_event_signatures(
    pdu: Mapping[str, Any],
    version: RoomVersion,
    keys: Mapping[str, Mapping[str, VerifyKey]],
    *,
    servers: Iterable[str] | None = None,
) -> None:
    """Raise SignatureError unless every required server (or `servers`) signed the event's
    redacted form with a known key. Room v5+ (`enforce_key_validity`) also requires the
    key to have been valid at the event's origin_server_ts."""
    _verify_event(pdu, version, keys, servers, _verify_now)


def _verify_event(
    pdu: Mapping[str, Any],
    version: RoomVersion,
    keys: Mapping[str, Mapping[str, VerifyKey]],
    servers: Iterable[str] | None,
    verify: _Verifier,
) -> None:
    needed = set(servers) if servers is not None else required_signers(pdu, version)
    at_ts: int | None = None
    if version.enforce_key_validity:
        ts = pdu.get("origin_server_ts")
        if not isinstance(ts, int) or isinstance(ts, bool):
            raise SignatureError("event has no valid origin_server_ts")
        at_ts = ts
    strict = version.strict_canonicaljson
    encoded: list[bytes] = []

    def message() -> bytes:
        # The redacted form is encoded once, however many servers must have signed it.
        if not encoded:
            try:
                encoded.append(encode_canonical_json(_event_signing_object(pdu, version), strict=strict))
            except CanonicalJSONError as e:
                raise SignatureError(f"cannot encode the signed object: {e}") from None
        return encoded[0]

    sigs = pdu.get("signatures")
    for server in sorted(needed):
        _check_signed(sigs, server, keys.get(server, {}), at_ts, message, verify)


# --- batches ------------------------------------------------------------------------

# Below this many ed25519 operations a batch runs inline: a thread hop costs more.
_MIN_PARALLEL = 8


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on every platform
        return os.cpu_count() or 1


class _Pipeline:
    """Feeds items to `fn` in worker threads, a chunk at a time as they are produced,
    so the calling thread's encoding overlaps the workers' libsodium calls. Inline
    (no threads) for small batches or a single worker without an executor."""

    def __init__(self, fn: Callable[[list[Any]], list[Any]], n_hint: int, workers: int | None,
                 executor: Executor | None):
        if workers is None:
            workers = _usable_cpus()
        self.fn = fn
        self.inline = n_hint < _MIN_PARALLEL or (workers <= 1 and executor is None)
        # A few chunks per worker: small enough to start early and balance the load.
        self.size = max(_MIN_PARALLEL, -(-n_hint // (max(1, workers) * 4)))
        self.own: ThreadPoolExecutor | None = None
        self.executor = executor
        if not self.inline and executor is None:
            self.own = self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ed25519")
        self.pending: list[Any] = []
        self.done: list[Future[list[Any]] | list[Any]] = []

    def add(self, item: Any) -> None:
        self.pending.append(item)
        if not self.inline and len(self.pending) >= self.size:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            assert self.executor is not None
            self.done.append(self.executor.submit(self.fn, self.pending))
            self.pending = []

    def results(self) -> list[Any]:
        try:
            if self.inline:
                return self.fn(self.pending)
            self._flush()
            return [x for f in self.done for x in (f.result() if isinstance(f, Future) else f)]
        finally:
            if self.own is not None:
                self.own.shutdown(wait=True)


def sign_events(
    pdus: Sequence[dict[str, Any]],
    version: RoomVersion,
    server_name: str,
    key: SigningKey,
    *,
    add_hashes: bool = True,
    workers: int | None = None,
    executor: Executor | None = None,
) -> list[dict[str, Any]]:
    """`add_hashes_and_signature` (or, with ``add_hashes=False``, `sign_event`) for many
    PDUs: same results, mutated in place and returned in order.

    Canonical encoding, hashing and redaction run on the calling thread; the ed25519
    operations run on `executor` or on `workers` threads (default: one per CPU; libsodium
    releases the GIL, so the batch uses every core). An exception is raised as a loop
    over the per-event function would raise it: the PDUs before the failing one are
    signed, the rest untouched."""
    strict = version.strict_canonicaljson
    sk_sign = key.sign

    def sign_chunk(messages: list[bytes]) -> list[bytes]:
        return [sk_sign(m) for m in messages]

    pipe = _Pipeline(sign_chunk, len(pdus), workers, executor)
    failure: BaseException | None = None
    try:
        for pdu in pdus:
            try:
                if add_hashes:
                    pdu["hashes"] = {"sha256": encode_base64(compute_content_hash(pdu, version))}
                    message = _encode_after_hash(_event_signing_object(pdu, version), version)
                else:
                    message = encode_canonical_json(_event_signing_object(pdu, version), strict=strict)
            except BaseException as e:  # re-raised once the PDUs before it are signed
                failure = e
                break
            pipe.add(message)
    finally:
        sigs = pipe.results()
    key_id = key.key_id
    for pdu, sig in zip(pdus, sigs):
        _attach_signature(pdu, server_name, key_id, sig)
    if failure is not None:
        raise failure
    return list(pdus)


def verify_events_batch(
    pdus: Sequence[Mapping[str, Any]],
    version: RoomVersion,
    keys: Mapping[str, Mapping[str, VerifyKey]],
    *,
    servers: Sequence[Iterable[str] | None] | None = None,
    workers: int | None = None,
    executor: Executor | None = None,
) -> list[SignatureError | None]:
    """`verify_event_signatures` for many PDUs: for each, None if it verifies, else the
    SignatureError the per-event call would raise (same message).

    Each event's rules run on the calling thread with every ed25519 check recorded as
    if it passed; the recorded checks then run in worker threads; an event's result is
    the error of its first failing check (where the per-event call would have stopped),
    else what the recording run gave."""
    if servers is not None and len(servers) != len(pdus):
        raise ValueError("servers must give one entry per PDU")
    provisional: list[SignatureError | None] = []
    labels: list[tuple[int, str, str]] = []  # (pdu index, signing name, key ID) per check

    def verify_chunk(checks: list[tuple[bytes, Any, VerifyKey]]) -> list[bool]:
        return [_verify_raw(m, s, k) for m, s, k in checks]

    pipe = _Pipeline(verify_chunk, len(pdus), workers, executor)
    try:
        for i, pdu in enumerate(pdus):

            def record(message: bytes, sig_b64: Any, key: VerifyKey, signing_name: str, key_id: str,
                       i: int = i) -> bool:
                pipe.add((message, sig_b64, key))
                labels.append((i, signing_name, key_id))
                return True

            try:
                _verify_event(pdu, version, keys, None if servers is None else servers[i], record)
                provisional.append(None)
            except SignatureError as e:
                provisional.append(e)
    finally:
        ok = pipe.results()
    out = list(provisional)
    failed: set[int] = set()
    for good, (i, signing_name, key_id) in zip(ok, labels):
        if not good and i not in failed:
            failed.add(i)
            out[i] = SignatureError(f"bad signature from {signing_name} with {key_id}")
    return out


def check_event_hash(pdu: Mapping[str, Any], version: RoomVersion) -> bool:
    """True if ``hashes.sha256`` matches; False means the event must be redacted before use."""
    return check_content_hash(dict(pdu), version)
