"""Image files: cheap header checks and decoding with precise errors."""
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


def check_image_file(path: Path) -> None:
    """Raise DataError unless the file exists, is non-empty and looks like a complete image."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(16)
            if size > 2:
                f.seek(-2, 2)
                tail = f.read(2)
            else:
                tail = b""
    except FileNotFoundError:
        raise DataError(path, "image file not found") from None
    except OSError as e:
        raise DataError(path, f"cannot read image file ({e.strerror})") from None
    if size == 0:
        raise DataError(path, "image file is empty")
    kind = next((k for m, k in _MAGIC.items() if head.startswith(m)), None)
    if kind is None:
        raise DataError(path, "not an image (unknown file header)")
    if kind == "jpeg" and tail != b"\xff\xd9":
        raise DataError(path, "corrupt JPEG (truncated: no end-of-image marker)")


def read_image(path) -> np.ndarray:
    """Decode an image file to an HWC uint8 BGR array; DataError if it cannot be decoded."""
    path = Path(path)
    check_image_file(path)
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise DataError(path, "corrupt image (cannot be decoded)")
    return img


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
