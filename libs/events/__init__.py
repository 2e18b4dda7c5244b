"""libs.events: the Matrix event core. Pure code: no I/O, no global state."""
from .canonical_json import CanonicalJSONError, NotJSONError, encode_canonical_json
from .event import Event
from .hashes import compute_content_hash, compute_event_id, compute_reference_hash, compute_room_id_v12
from .redaction import redact
from .room_versions import ROOM_VERSIONS, EventFormat, RoomVersion, StateResVersion, get_room_version
from .unpadded_base64 import decode_base64, encode_base64

__all__ = [
    "CanonicalJSONError", "NotJSONError", "encode_canonical_json", "Event",
    "compute_content_hash", "compute_event_id", "compute_reference_hash", "compute_room_id_v12",
    "redact", "ROOM_VERSIONS", "EventFormat", "RoomVersion", "StateResVersion", "get_room_version",
    "decode_base64", "encode_base64",
]
