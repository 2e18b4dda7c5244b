"""services/mediaapi/federation.py: the multipart/mixed answer of federation media."""
from __future__ import annotations

import pytest

from services.mediaapi.federation import (MultipartError, build_multipart, filename_from_disposition,
                                          parse_multipart, valid_remote_media)


def test_roundtrip_keeps_bytes_exactly() -> None:
    data = b"\r\n--not-the-boundary\r\n\x00\xff" * 100
    body, ctype = build_multipart(data, "image/png", 'inline; filename="a b.png"', boundary="b0undary")
    assert ctype == "multipart/mixed; boundary=b0undary"
    part = parse_multipart(ctype, body)
    assert part.metadata == {} and part.data == data and part.content_type == "image/png"
    assert filename_from_disposition(part.content_disposition) == "a b.png"


def test_parses_a_location_answer_and_quoted_boundary() -> None:
    body = (b'--xyz\r\nContent-Type: application/json\r\n\r\n{"k": 1}\r\n'
            b"--xyz\r\nLocation: https://cdn.example/abc\r\n\r\n\r\n--xyz--\r\n")
    part = parse_multipart('multipart/mixed; boundary="xyz"', body)
    assert part.metadata == {"k": 1} and part.data is None and part.location == "https://cdn.example/abc"


@pytest.mark.parametrize("ctype, body", [
    ("application/json", b"{}"),
    ("multipart/mixed", b"--x\r\n\r\n{}\r\n--x--"),                                        # no boundary
    ("multipart/mixed; boundary=x", b"--x\r\nContent-Type: application/json\r\n\r\n{}\r\n--x--\r\n"),  # 1 part
    ("multipart/mixed; boundary=x", b"--x\r\n\r\nnot json\r\n--x\r\nContent-Type: a/b\r\n\r\nd\r\n--x--"),
    ("multipart/mixed; boundary=x", b"--x\r\n\r\n[1]\r\n--x\r\nContent-Type: a/b\r\n\r\nd\r\n--x--"),
])
def test_malformed_answers_raise(ctype: str, body: bytes) -> None:
    with pytest.raises(MultipartError):
        parse_multipart(ctype, body)


def test_filenames_and_ids_are_path_safe() -> None:
    assert filename_from_disposition("attachment; filename*=utf-8''%C3%A9t%C3%A9.txt") == "été.txt"
    assert filename_from_disposition('attachment; filename="../x"') is None
    assert filename_from_disposition(None) is None
    assert valid_remote_media("example.org:8448", "AbC_-9")
    for server, media in [("..", "x"), ("a/b", "x"), ("example.org", "../etc"), ("example.org", ""),
                          ("example.org", "a.b"), ("-bad.org", "x")]:
        assert not valid_remote_media(server, media)
