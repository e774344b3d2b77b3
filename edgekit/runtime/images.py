"""Image files for inference: header checks, size limits and a cheap decode (what Engine.decode reads).

A JPEG is complete when an end-of-image marker follows its first scan; bytes after that marker are accepted.
The strict whole-image check for dataset validation is edgekit.data.images.verify_image.

Size limits live here, once, for eval, train (dataset validation), Engine and serve: the width and height are read
from the file's header and checked against MAX_PIXELS and MAX_SIDE before anything is decoded, so a small file that
would decode to gigabytes (a 30000x30000 PNG of zeros is 875 KB) is refused without allocating it.
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
MAX_PIXELS = 100_000_000  # decoded width x height (100 MP: 300 MB as BGR)
MAX_SIDE = 65_535  # the largest side a JPEG can have; thinner images are fine (see preprocess.letterbox)


class ImageTooLarge(DataError):
    """An image whose header declares more pixels, or a longer side, than the limits (refused before decoding)."""


def check_size(width: int, height: int, path, max_pixels: int = MAX_PIXELS, max_side: int = MAX_SIDE) -> None:
    """ImageTooLarge naming the limit when width x height is over max_pixels or a side over max_side."""
    if width * height > max_pixels:
        raise ImageTooLarge(path, f"image of {width}x{height} = {width * height:,} pixels is over the limit of "
                                  f"{max_pixels:,} decoded pixels")
    if max(width, height) > max_side:
        raise ImageTooLarge(path, f"image of {width}x{height} has a side over the limit of {max_side} pixels")


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
        if data[pos] != 0xFF:  # extraneous bytes before a marker (libjpeg skips them too)
            nxt = data.find(b"\xff", pos)
            if nxt < 0:
                return None
            pos = nxt
            continue
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


def _u(data: bytes, at: int, n: int, order: str = "big") -> int:
    return int.from_bytes(data[at:at + n], order)


def _webp_size(d: bytes) -> tuple[int, int] | None:
    chunk = d[12:16]
    if chunk == b"VP8X" and len(d) >= 30:
        return 1 + _u(d, 24, 3, "little"), 1 + _u(d, 27, 3, "little")
    if chunk == b"VP8L" and len(d) >= 25 and d[20] == 0x2F:
        bits = _u(d, 21, 4, "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 " and len(d) >= 30 and d[23:26] == b"\x9d\x01\x2a":
        return _u(d, 26, 2, "little") & 0x3FFF, _u(d, 28, 2, "little") & 0x3FFF
    return None


def _tiff_size(d: bytes) -> tuple[int, int] | None:
    """ImageWidth and ImageLength (tags 256, 257) of the first IFD: the page a decoder reads."""
    order = "little" if d[:2] == b"II" else "big"
    ifd = _u(d, 4, 4, order)
    if ifd + 2 > len(d):
        return None
    found = {}
    for k in range(_u(d, ifd, 2, order)):
        e = ifd + 2 + 12 * k
        if e + 12 > len(d):
            return None
        tag, typ = _u(d, e, 2, order), _u(d, e + 2, 2, order)
        if tag in (256, 257) and typ in (3, 4):
            found[tag] = _u(d, e + 8, 2 if typ == 3 else 4, order)
    return (found[256], found[257]) if len(found) == 2 else None


def _bmp_size(d: bytes) -> tuple[int, int] | None:
    if len(d) < 26:
        return None
    if _u(d, 14, 4, "little") == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        return _u(d, 18, 2, "little"), _u(d, 20, 2, "little")
    w = int.from_bytes(d[18:22], "little", signed=True)
    h = int.from_bytes(d[22:26], "little", signed=True)
    return abs(w), abs(h)  # a negative height means rows stored top-down


def header_size(data: bytes, kind: str) -> tuple[int, int] | None:
    """(width, height) from an image's header without decoding it; None when the header does not say."""
    if kind == "png":
        return (_u(data, 16, 4), _u(data, 20, 4)) if len(data) >= 24 and data[12:16] == b"IHDR" else None
    if kind == "jpeg":
        head = jpeg_header(data)
        return head[1] if head else None
    if kind == "webp":
        return _webp_size(data) if data[8:12] == b"WEBP" else None
    if kind == "tiff":
        return _tiff_size(data)
    return _bmp_size(data)


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


def check_bytes(data: bytes, path, max_pixels: int = MAX_PIXELS) -> str:
    """The image kind, after checking the header, the size it declares (ImageTooLarge) and that a JPEG is whole."""
    kind = image_kind(data[:16], path)
    size = header_size(data, kind)
    if size is None or min(size) <= 0:
        said = "does not give the image size" if size is None else f"declares a {size[0]}x{size[1]} image"
        raise DataError(path, f"corrupt image (cannot be decoded: its {kind.upper()} header {said})")
    check_size(*size, path, max_pixels=max_pixels)
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
