"""Device strings, parsed once: 'cpu', 'cuda', 'cuda:1', 'GPU', 'GPU.1', 'gpu:1', 'NPU', 'AUTO', 'HETERO:GPU,CPU'."""
from __future__ import annotations

import re

_INDEXED = re.compile(r"([a-z_]+)[:.](\d+)")


def parse_device(device: str) -> tuple[str, int | None]:
    """'cuda:1' -> ('cuda', 1), 'GPU.0' -> ('gpu', 0), 'cpu' -> ('cpu', None).

    A string without a numeric index ('HETERO:GPU,CPU', 'cuda:x') is all kind, lower-cased: each backend
    accepts or refuses it by name, so this never raises.
    """
    d = str(device).strip().lower()
    m = _INDEXED.fullmatch(d)
    return (m.group(1), int(m.group(2))) if m else (d, None)
