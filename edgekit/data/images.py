"""Image files: header checks, a cheap decode for inference and a strict one for dataset validation.

A JPEG is complete when an end-of-image marker follows its first scan; bytes after that marker are accepted.
libjpeg reports data it could not decode (a file cut short and closed with FFD9 decodes half grey) only as a
warning on stderr; `verify_image` catches that warning and makes it an error naming the file.
"""
from __future__ import annotations

import os
import sys
import tempfile
import threading
from contextlib import contextmanager
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
_EOI = b"\xff\xd9"
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_FD2_LOCK = threading.Lock()


def _kind(head: bytes, path: Path) -> str:
    kind = next((k for m, k in _MAGIC.items() if head.startswith(m)), None)
    if kind is None:
        raise DataError(path, "not an image (unknown file header)")
    return kind


def _jpeg_header(data: bytes) -> tuple[int, tuple[int, int] | None] | None:
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
    if data.endswith(_EOI):
        return
    head = _jpeg_header(data)
    if head is None or data.rfind(_EOI, head[0]) < 0:
        raise DataError(path, "corrupt JPEG (truncated: no end-of-image marker)")


def _read(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, "image file not found") from None
    except OSError as e:
        raise DataError(path, f"cannot read image file ({e.strerror})") from None
    if not data:
        raise DataError(path, "image file is empty")
    return data


def _check_bytes(data: bytes, path: Path) -> str:
    kind = _kind(data[:16], path)
    if kind == "jpeg":
        _check_jpeg_end(data, path)
    return kind


def jpeg_ends_with_eoi(path: Path) -> bool:
    """False for a JPEG whose last two bytes are not FFD9 (trailing bytes): a file Ultralytics would re-save."""
    with open(path, "rb") as f:
        if _kind(f.read(16), path) != "jpeg":
            return True
        f.seek(-2, 2)
        return f.read(2) == _EOI


def _decode(data: bytes, path: Path, flags=cv2.IMREAD_COLOR) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if img is None or img.size == 0:
        raise DataError(path, "corrupt image (cannot be decoded)")
    return img


def read_image(path) -> np.ndarray:
    """Decode an image file to an HWC uint8 BGR array; DataError if it is incomplete or cannot be decoded."""
    path = Path(path)
    data = _read(path)
    _check_bytes(data, path)
    return _decode(data, path)


@contextmanager
def _native_stderr(lines: list[str]):
    """Collect what native code writes to file descriptor 2 while the block runs (one block at a time)."""
    with _FD2_LOCK, tempfile.TemporaryFile() as tmp:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):  # no usable fd 2: decode without listening
            yield lines
            return
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines += tmp.read().decode(errors="replace").splitlines()


def _is_corrupt_data(line: str) -> bool:
    """libjpeg's warnings that mean pixels were not decoded (they are filled in grey)."""
    return ("Corrupt JPEG data" in line and "extraneous bytes" not in line) or "Premature end of JPEG file" in line


def verify_image(path) -> tuple[int, int]:
    """Strict check that the whole image decodes; returns (width, height). For dataset validation, not per frame.

    The decoder's own messages (libjpeg, libpng) become the error; JPEGs are decoded at 1/8 scale, which still
    entropy-decodes every coefficient, so missing data is noticed at a third of the cost of a full decode.
    """
    path = Path(path)
    data = _read(path)
    kind = _check_bytes(data, path)
    lines: list[str] = []
    with _native_stderr(lines):
        img = cv2.imdecode(np.frombuffer(data, np.uint8),
                           cv2.IMREAD_REDUCED_GRAYSCALE_8 if kind == "jpeg" else cv2.IMREAD_COLOR)
    lines = [ln.strip() for ln in lines if ln.strip()]
    bad = [ln for ln in lines if _is_corrupt_data(ln)]
    if bad:
        raise DataError(path, f"corrupt JPEG (decoder: {bad[0]})")
    if img is None or img.size == 0:
        raise DataError(path, "corrupt image (cannot be decoded" + (f": {lines[0]})" if lines else ")"))
    other = [ln for ln in lines if "extraneous bytes" not in ln]
    if other:  # not ours to swallow (a benign decoder warning, another thread's output)
        os.write(2, ("\n".join(other) + "\n").encode())
    if kind != "jpeg":
        return img.shape[1], img.shape[0]
    head = _jpeg_header(data)
    if head and head[1] and min(head[1]) > 0:
        return head[1]
    h, w = _decode(data, path).shape[:2]  # no frame header before the scan: decode at full size
    return w, h


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
