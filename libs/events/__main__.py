"""`python -m libs.events SUBCOMMAND`: the event library from the command line.

Reads one JSON document on stdin, writes one canonical JSON document on stdout.
Bad input: exit status 1 and ``{"error": "...", "errcode": "..."}`` on stdout.
See README.md ("libs/events CLI") for the subcommands.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

from .canonical_json import CanonicalJSONError, encode_canonical_json, normalise_numbers, parse_canonical_json
from .event import Event
from .hashes import compute_content_hash, compute_event_id, compute_room_id_v12
from .limits import EventFormatError
from .redaction import redact
from .room_versions import EventFormat, RoomVersion, UnsupportedRoomVersion, get_room_version
from .signing import (
    KeyFormatError, SignatureError, VerifyKey, add_hashes_and_signature, check_event_hash,
    parse_signing_key_file, verify_event_signatures,
)
from .unpadded_base64 import encode_base64


class CLIError(Exception):
    def __init__(self, message: str, errcode: str = "M_BAD_JSON") -> None:
        super().__init__(message)
        self.errcode = errcode


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse would exit 2 with text
        raise CLIError(message, "M_INVALID_PARAM")


def _object(value: Any, what: str = "input") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CLIError(f"{what} must be a JSON object")
    return value


def _read_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise CLIError(f"cannot read {path}: {e}", "M_INVALID_PARAM") from None


def _event(pdu: Any, rv: RoomVersion, what: str = "event") -> Event:
    pdu = _object(pdu, what)
    if rv.event_format is EventFormat.V1 and not isinstance(pdu.get("event_id"), str):
        raise CLIError(f"{what}: room versions 1 and 2 need an event_id")
    return Event(pdu, rv, compute_event_id(pdu, rv))


def cmd_canonical(doc: Any, args: argparse.Namespace) -> Any:
    return normalise_numbers(doc)


def cmd_content_hash(doc: Any, args: argparse.Namespace) -> Any:
    rv = get_room_version(args.room_version) if args.room_version else None
    return {"sha256": encode_base64(compute_content_hash(_object(doc, "PDU"), rv))}


def cmd_event_id(doc: Any, args: argparse.Namespace) -> Any:
    rv = get_room_version(args.room_version)
    pdu = _object(doc, "PDU")
    if rv.event_format is EventFormat.V1 and not isinstance(pdu.get("event_id"), str):
        raise CLIError("room versions 1 and 2 need an event_id on the event")
    return {"event_id": compute_event_id(pdu, rv)}


def cmd_room_id(doc: Any, args: argparse.Namespace) -> Any:
    rv = get_room_version(args.room_version or "12")
    pdu = _object(doc, "create event")
    if not rv.hydra:
        raise CLIError("room IDs are derived from the create event only from room version 12")
    if pdu.get("type") != "m.room.create" or pdu.get("state_key") != "":
        raise CLIError("not a create event (type m.room.create, state_key \"\")")
    return {"room_id": compute_room_id_v12(pdu, rv)}


def cmd_redact(doc: Any, args: argparse.Namespace) -> Any:
    return redact(_object(doc, "PDU"), get_room_version(args.room_version))


def cmd_sign(doc: Any, args: argparse.Namespace) -> Any:
    rv = get_room_version(args.room_version)
    pdu = dict(_object(doc, "PDU"))
    pdu.pop("hashes", None)
    key = parse_signing_key_file(_read_file(args.key))[0]
    return add_hashes_and_signature(pdu, rv, args.server, key)


def cmd_verify(doc: Any, args: argparse.Namespace) -> Any:
    rv = get_room_version(args.room_version)
    pdu = _object(doc, "PDU")
    raw = parse_canonical_json(_read_file(args.keys))
    keys: dict[str, dict[str, VerifyKey]] = {}
    for server, entries in _object(raw, "keys file").items():
        for key_id, b64 in _object(entries, f"keys of {server}").items():
            keys.setdefault(server, {})[key_id] = VerifyKey.from_base64(b64)
    try:
        verify_event_signatures(pdu, rv, keys)
    except SignatureError as e:
        return {"valid": False, "reason": str(e)}
    if not check_event_hash(pdu, rv):
        return {"valid": True, "reason": "signatures valid, but the content hash does not match: "
                                         "the event must be redacted"}
    return {"valid": True, "reason": "signatures and content hash valid"}


def cmd_auth(doc: Any, args: argparse.Namespace) -> Any:
    rv = get_room_version(args.room_version)
    try:
        from .auth import AuthError, check_event_auth
    except ImportError:
        raise CLIError("auth rules are not available in this build", "M_UNRECOGNIZED") from None
    doc = _object(doc)
    event = _event(doc.get("event"), rv)
    auth_list = doc.get("auth_events", [])
    if not isinstance(auth_list, list):
        raise CLIError("auth_events must be a list")
    auth_events = [_event(p, rv, "auth event") for p in auth_list]
    try:
        check_event_auth(event, auth_events)
    except AuthError as e:
        return {"allowed": False, "reason": str(getattr(e, "reason", e))}
    return {"allowed": True, "reason": ""}


def cmd_resolve(doc: Any, args: argparse.Namespace) -> Any:
    rv = get_room_version(args.room_version)
    try:
        from .state_res import resolve_state_sync
    except ImportError:
        raise CLIError("state resolution is not available in this build", "M_UNRECOGNIZED") from None
    doc = _object(doc)
    raw_events = _object(doc.get("events"), "events")
    events: dict[str, Event] = {}
    alias: dict[str, str] = {}
    for given_id, pdu in raw_events.items():
        ev = _event(pdu, rv, f"event {given_id}")
        events[ev.event_id] = ev
        alias[given_id] = ev.event_id
    raw_sets = doc.get("state_sets")
    if not isinstance(raw_sets, list):
        raise CLIError("state_sets must be a list of lists of event IDs")
    state_sets: list[dict[tuple[str, str], str]] = []
    for s in raw_sets:
        if not isinstance(s, list):
            raise CLIError("state_sets must be a list of lists of event IDs")
        state: dict[tuple[str, str], str] = {}
        for eid in s:
            ev = events.get(alias.get(eid, eid)) if isinstance(eid, str) else None
            if ev is None:
                raise CLIError(f"state set refers to unknown event {eid!r}")
            if not ev.is_state():
                raise CLIError(f"{eid} is not a state event")
            state[ev.state_tuple] = ev.event_id
        state_sets.append(state)
    resolved = resolve_state_sync(rv, state_sets, events)
    return {"state": sorted(resolved.values())}


COMMANDS = {
    "canonical": (cmd_canonical, "any JSON -> its canonical form"),
    "content-hash": (cmd_content_hash, "PDU -> {\"sha256\": ...}"),
    "event-id": (cmd_event_id, "PDU -> {\"event_id\": ...}"),
    "room-id": (cmd_room_id, "v12 create event -> {\"room_id\": ...}"),
    "redact": (cmd_redact, "PDU -> redacted PDU"),
    "sign": (cmd_sign, "PDU -> PDU with hashes and signatures"),
    "verify": (cmd_verify, "PDU -> {\"valid\": ..., \"reason\": ...}"),
    "auth": (cmd_auth, "{event, auth_events} -> {\"allowed\": ..., \"reason\": ...}"),
    "resolve": (cmd_resolve, "{state_sets, events} -> {\"state\": [...]}"),
}
_NEEDS_VERSION = {"event-id", "redact", "sign", "verify", "auth", "resolve"}


def _build_parser() -> _Parser:
    p = _Parser(prog="python -m libs.events", description=__doc__)
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    for name, (_, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text)
        sp.add_argument("--room-version", required=name in _NEEDS_VERSION)
        if name == "sign":
            sp.add_argument("--key", required=True, help="signing key file: 'ed25519 <key_id> <seed>'")
            sp.add_argument("--server", required=True, help="the signing server's name")
        if name == "verify":
            sp.add_argument("--keys", required=True, help='JSON file {"server": {"ed25519:id": "<b64>"}}')
    return p


def run(argv: list[str], stdin: bytes) -> tuple[int, bytes]:
    """The CLI as a function: returns (exit status, stdout bytes)."""
    try:
        args = _build_parser().parse_args(argv)
        if not args.command:
            raise CLIError("a subcommand is required: " + ", ".join(COMMANDS), "M_INVALID_PARAM")
        func = COMMANDS[args.command][0]
        rv = get_room_version(args.room_version) if getattr(args, "room_version", None) else None
        # Events of strict room versions are parsed with the strict number rules.
        doc = parse_canonical_json(stdin, rv if args.command != "canonical" else None)
        out = func(doc, args)
        return 0, encode_canonical_json(out, strict=rv is None or rv.strict_canonicaljson) + b"\n"
    except UnsupportedRoomVersion as e:
        return 1, _error(str(e), "M_UNSUPPORTED_ROOM_VERSION")
    except (CLIError, CanonicalJSONError, EventFormatError, KeyFormatError, SignatureError) as e:
        return 1, _error(str(e), getattr(e, "errcode", "M_BAD_JSON"))
    except SystemExit as e:  # --help
        return int(e.code or 0), b""
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
        return 1, _error(f"bad input: {e}", "M_BAD_JSON")
    except Exception as e:  # noqa: BLE001 - a debugging tool must never print a traceback
        return 1, _error(f"internal error: {type(e).__name__}: {e}", "M_UNKNOWN")


def _error(message: str, errcode: str) -> bytes:
    return encode_canonical_json({"error": message, "errcode": errcode}) + b"\n"


def main() -> None:
    status, out = run(sys.argv[1:], sys.stdin.buffer.read())
    sys.stdout.buffer.write(out)
    sys.stdout.buffer.flush()
    sys.exit(status)


if __name__ == "__main__":
    main()
