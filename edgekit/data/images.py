"""Image files of a dataset: the strict whole-image check for validation (inference reads: edgekit.runtime.images).

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
from ..runtime.images import EOI, check_bytes, decode_bytes, file_bytes, image_kind, jpeg_header

_FD2_LOCK = threading.Lock()


def jpeg_ends_with_eoi(path: Path) -> bool:
    """False for a JPEG whose last two bytes are not FFD9 (trailing bytes): a file Ultralytics would re-save."""
    with open(path, "rb") as f:
        if image_kind(f.read(16), path) != "jpeg":
            return True
        f.seek(-2, 2)
        return f.read(2) == EOI


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
    data = file_bytes(path)
    kind = check_bytes(data, path)
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
    head = jpeg_header(data)
    if head and head[1] and min(head[1]) > 0:
        return head[1]
    h, w = decode_bytes(data, path).shape[:2]  # no frame header before the scan: decode at full size
    return w, h
