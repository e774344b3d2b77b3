"""Image files for inference: header checks and a cheap decode (what Engine.decode reads).

A JPEG is complete when an end-of-image marker follows its first scan; bytes after that marker are accepted.
The strict whole-image check for dataset validation is edgekit.data.images.verify_image.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
_MAGIC = {
    b"\xff\xd8\xff": "jpeg",
    b"\x89PNG": "png",
    b"BM": "bmp",
    b"RIFF": "webp",
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
}
EOI = b"\xff\xd9"
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def image_kind(head: bytes, path: Path) -> str:
    """'jpeg', 'png', ... from a file's first bytes; DataError for anything else."""
    kind = next((k for m, k in _MAGIC.items() if head.startswith(m)), None)
    if kind is None:
        raise DataError(path, "not an image (unknown file header)")
    return kind


def jpeg_header(data: bytes) -> tuple[int, tuple[int, int] | None] | None:
    """(offset of the first start-of-scan marker, (width, height) from the frame header); None if no scan starts."""
    pos, size, n = 2, None, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return None
        m = data[pos + 1]
        if m == 0xFF:  # fill byte
            pos += 1
            continue
        if m == 0xDA:
            return pos, size
        if m == 0x01 or 0xD0 <= m <= 0xD7:  # markers without a length
            pos += 2
            continue
        if m in _SOF and pos + 9 <= n:
            size = (int.from_bytes(data[pos + 7:pos + 9], "big"), int.from_bytes(data[pos + 5:pos + 7], "big"))
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return None


def _check_jpeg_end(data: bytes, path: Path) -> None:
    """An end-of-image marker must follow the first scan (trailing bytes after it are fine)."""
    if data.endswith(EOI):
        return
    head = jpeg_header(data)
    if head is None or data.rfind(EOI, head[0]) < 0:
        raise DataError(path, "corrupt JPEG (truncated: no end-of-image marker)")


def file_bytes(path: Path) -> bytes:
    """The whole file; DataError naming it when it is missing, unreadable or empty."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, "image file not found") from None
    except OSError as e:
        raise DataError(path, f"cannot read image file ({e.strerror})") from None
    if not data:
        raise DataError(path, "image file is empty")
    return data


def check_bytes(data: bytes, path: Path) -> str:
    """The image kind, after checking the header (and that a JPEG is not cut short)."""
    kind = image_kind(data[:16], path)
    if kind == "jpeg":
        _check_jpeg_end(data, path)
    return kind


def decode_bytes(data: bytes, path: Path, flags=cv2.IMREAD_COLOR) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if img is None or img.size == 0:
        raise DataError(path, "corrupt image (cannot be decoded)")
    return img


def read_image(path) -> np.ndarray:
    """Decode an image file to an HWC uint8 BGR array; DataError if it is incomplete or cannot be decoded."""
    path = Path(path)
    data = file_bytes(path)
    check_bytes(data, path)
    return decode_bytes(data, path)


def list_images(folder: Path) -> list[Path]:
    """Image files under a folder (recursively), sorted."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
