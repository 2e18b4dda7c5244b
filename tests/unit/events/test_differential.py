"""Differential tests: our libs/events against implementations nobody here wrote —
`canonicaljson`, `signedjson` and Synapse (test-only oracle) — on generated inputs.

CI runs a fixed, derandomized set; AXON_LONG_FUZZ=1 runs many more examples. The number
of cases actually compared is printed at the end of the session (see conftest)."""
from __future__ import annotations

import copy
import hashlib
import os

import canonicaljson
import pytest
import signedjson.key
import signedjson.sign
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libs.events import compute_event_id, get_room_version, redact
from libs.events.canonical_json import encode_canonical_json, parse_canonical_json
from libs.events.hashes import compute_content_hash
from libs.events.signing import (
    SigningKey, VerifyKey, compute_event_signature, sign_json, verify_event_signatures, verify_signed_json,
)
from libs.events.unpadded_base64 import decode_base64

from .strategies import JSON, pdu

synapse_rv = pytest.importorskip("synapse.api.room_versions")
from synapse.crypto import event_signing as syn_signing  # noqa: E402
from synapse.events import make_event_from_dict  # noqa: E402
from synapse.events.utils import prune_event  # noqa: E402
from synapse.synapse_rust.events import redact_event_dict  # noqa: E402

LONG = os.environ.get("AXON_LONG_FUZZ") == "1"
N = 2000 if LONG else 100
SETTINGS = settings(max_examples=N, derandomize=not LONG, deadline=None, database=None if not LONG else settings.default.database,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
VERSIONS = [str(n) for n in range(1, 13)]

COUNTS: dict[str, int] = {}


def _count(name: str) -> None:
    COUNTS[name] = COUNTS.get(name, 0) + 1


SEED = b"\x07" * 32
OUR_KEY = SigningKey.from_seed(SEED, "k1")
THEIR_KEY = signedjson.key.decode_signing_key_base64("ed25519", "k1", "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc")


@SETTINGS
@given(JSON)
def test_canonical_encoding_matches_canonicaljson(value) -> None:
    ours = encode_canonical_json(value)
    assert ours == canonicaljson.encode_canonical_json(value)
    assert parse_canonical_json(ours) == value
    _count("canonical_json")


@SETTINGS
@given(st.dictionaries(st.text(max_size=5), JSON, max_size=5), st.text(min_size=1, max_size=10))
def test_signatures_interoperate_with_signedjson(obj, name) -> None:
    ours = sign_json(copy.deepcopy(obj), name, OUR_KEY)
    theirs = signedjson.sign.sign_json(copy.deepcopy(obj), name, THEIR_KEY)
    assert ours["signatures"] == theirs["signatures"]  # ed25519 is deterministic
    signedjson.sign.verify_signed_json(ours, name, signedjson.key.get_verify_key(THEIR_KEY))
    assert verify_signed_json(theirs, name, {"ed25519:k1": VerifyKey(OUR_KEY.public_key)}) == "ed25519:k1"
    _count("signedjson")


@pytest.mark.parametrize("version", VERSIONS)
def test_events_match_synapse(version: str) -> None:
    ours_rv = get_room_version(version)
    syn = synapse_rv.KNOWN_ROOM_VERSIONS[version]

    @SETTINGS
    @given(pdu(int(version)))
    def check(ev) -> None:
        if ev["type"] == "m.room.create" and "room_id" not in ev and not ours_rv.hydra:
            return
        # Content hash.
        name, digest = syn_signing.compute_content_hash(copy.deepcopy(ev), hashlib.sha256)
        assert compute_content_hash(ev, ours_rv) == digest
        ev["hashes"] = {"sha256": signedjson.key.encode_base64(digest)}
        # Redaction (Synapse adds an empty `unsigned` to pruned events).
        theirs = redact_event_dict(syn, copy.deepcopy(ev))
        assert redact(ev, ours_rv) == {k: v for k, v in theirs.items() if k != "unsigned"}
        sev = make_event_from_dict(copy.deepcopy(ev), syn)
        pruned = prune_event(sev).get_pdu_json()
        pruned.pop("unsigned", None)
        if "signatures" not in ev:
            pruned.pop("signatures", None)  # EventBase always has one
        ours_pruned = redact(ev, ours_rv)
        ours_pruned.pop("unsigned", None)
        assert encode_canonical_json(ours_pruned) == canonicaljson.encode_canonical_json(pruned)
        # Event ID (reference hash for v3+).
        assert compute_event_id(ev, ours_rv) == sev.event_id
        # Event signature, and verification both ways.
        sigs = syn_signing.compute_event_signature(syn, copy.deepcopy(ev), "a.example", THEIR_KEY)
        assert compute_event_signature(ev, ours_rv, OUR_KEY) == sigs["a.example"]["ed25519:k1"]
        signed = dict(ev, signatures=sigs)
        verify_event_signatures(signed, ours_rv, {"a.example": {"ed25519:k1": VerifyKey(OUR_KEY.public_key)}},
                                servers=["a.example"])
        _count(f"events_v{version}")

    check()
    assert COUNTS.get(f"events_v{version}", 0) > 0


def test_report_counts(capsys) -> None:
    # Runs last in this module (pytest keeps file order): print the tally for the report.
    total = sum(COUNTS.values())
    with capsys.disabled():
        print(f"\n[differential] cases compared: {total} {dict(sorted(COUNTS.items()))}")
    assert total > 0
