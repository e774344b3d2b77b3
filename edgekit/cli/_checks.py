"""Option checks a command makes before any work: one line naming the option (exit 2), nothing written.

argparse checks types; these check what a type cannot say: ranges (a NaN or an infinity is never a valid figure),
files that must exist and be readable, device strings.
"""
from __future__ import annotations

import math
from pathlib import Path

from ..errors import EdgekitError


def _finite(option: str, value) -> float:
    if not math.isfinite(value):
        raise EdgekitError(f"{option}: {value} is not a number")
    return value


def at_least(option: str, value, low, unit: str = "") -> None:
    """value >= low (None: the option was not given)."""
    if value is not None and _finite(option, value) < low:
        raise EdgekitError(f"{option}: {value:g} is below {low:g}{unit}: give a value >= {low:g}")


def above(option: str, value, low, unit: str = "") -> None:
    """value > low (None: the option was not given)."""
    if value is not None and _finite(option, value) <= low:
        raise EdgekitError(f"{option}: {value:g} must be above {low:g}{unit}")


def readable_file(option: str, path) -> Path:
    """A file that exists and can be read (its first byte is read: permissions are checked, not guessed)."""
    p = Path(path)
    if not p.exists():
        raise EdgekitError(f"{option}: {p}: no such file")
    if not p.is_file():
        raise EdgekitError(f"{option}: {p}: not a file")
    try:
        with open(p, "rb") as f:
            f.read(1)
    except OSError as e:
        raise EdgekitError(f"{option}: {p}: cannot read it ({e.strerror or e})") from None
    return p


def device(option: str, value: str, kinds) -> str:
    """A device string whose kind one of `kinds` runs on; a CUDA index must exist here."""
    from ..runtime.devices import parse_device

    text = str(value).strip()
    kind, index = parse_device(text)
    if not text or kind not in kinds:
        raise EdgekitError(f"{option}: '{value}' is none of the device kinds this can run on "
                           f"({', '.join(sorted(kinds))}; e.g. cpu, cuda:0)")
    from .._imports import available

    if kind == "cuda" and available("torch"):  # without torch, the command's dependency check names its extra
        import torch

        count = torch.cuda.device_count()
        if (index or 0) >= count:
            raise EdgekitError(f"{option}: '{value}': this machine has {count} CUDA device(s)")
    return text
