"""Unpadded base64, standard and URL-safe alphabets, as the Matrix spec uses them."""
from __future__ import annotations

import base64
import binascii


class Base64Error(ValueError):
    pass


def encode_base64(data: bytes, urlsafe: bool = False) -> str:
    enc = base64.urlsafe_b64encode(data) if urlsafe else base64.b64encode(data)
    return enc.rstrip(b"=").decode("ascii")


def decode_base64(text: str | bytes) -> bytes:
    """Decode padded or unpadded base64 in either alphabet."""
    if isinstance(text, str):
        try:
            raw = text.encode("ascii")
        except UnicodeEncodeError:
            raise Base64Error("base64 must be ASCII") from None
    else:
        raw = text
    raw = raw.rstrip(b"=")
    if len(raw) % 4 == 1:
        raise Base64Error("invalid base64 length")
    raw = raw.replace(b"-", b"+").replace(b"_", b"/") + b"=" * (-len(raw) % 4)
    try:
        return base64.b64decode(raw, validate=True)
    except binascii.Error as e:
        raise Base64Error(str(e)) from None
