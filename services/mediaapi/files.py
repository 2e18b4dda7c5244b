"""Media bytes on disk: write-then-rename with fsync, so a crash never leaves a
half-written file under a media ID that the database says is complete."""
from __future__ import annotations

import asyncio
import hashlib
import io
import os
from pathlib import Path


class FileStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, server_name: str, media_id: str, suffix: str = "") -> Path:
        # Two levels of fan-out keep directories small.
        safe_server = server_name.replace("/", "_").replace(":", "_")
        return self.root / safe_server / media_id[:2] / media_id[2:4] / (media_id + suffix)

    def thumbnail_path(self, server_name: str, media_id: str, width: int, height: int, method: str) -> Path:
        return self.path(server_name, media_id, f".thumb-{width}x{height}-{method}")

    async def write(self, target: Path, data: bytes) -> str:
        """Durably write `data` to `target`; returns its sha256 hex digest."""
        return await asyncio.to_thread(_write_sync, target, data)

    async def read(self, target: Path) -> bytes | None:
        try:
            return await asyncio.to_thread(target.read_bytes)
        except FileNotFoundError:
            return None


def _write_sync(target: Path, data: bytes) -> str:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    dfd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return hashlib.sha256(data).hexdigest()


THUMBNAILABLE = {"image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp"}


def make_thumbnail(data: bytes, width: int, height: int, method: str) -> tuple[bytes, str] | None:
    """Scale (fit inside) or crop (fill then centre-crop) an image; None if not an image.

    Runs in a worker thread; decompression bombs are refused by Pillow's limit."""
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception:  # noqa: BLE001 - any undecodable input is simply not thumbnailable
        return None
    src_w, src_h = img.size
    if src_w <= 0 or src_h <= 0:
        return None
    if method == "crop":
        scale = max(width / src_w, height / src_h)
        new_w, new_h = max(1, round(src_w * scale)), max(1, round(src_h * scale))
        if scale < 1:
            img = img.resize((new_w, new_h), Image.LANCZOS)
        else:
            new_w, new_h = src_w, src_h
        left = max(0, (new_w - width) // 2)
        top = max(0, (new_h - height) // 2)
        img = img.crop((left, top, left + min(width, new_w), top + min(height, new_h)))
    else:
        img.thumbnail((width, height), Image.LANCZOS)
    out = io.BytesIO()
    if img.mode in ("RGBA", "LA", "P"):
        img.save(out, format="PNG")
        return out.getvalue(), "image/png"
    img.convert("RGB").save(out, format="JPEG", quality=85)
    return out.getvalue(), "image/jpeg"
