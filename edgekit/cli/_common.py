"""Small helpers shared by command modules."""
from __future__ import annotations

import json
import sys

from ..io import atomic_write_json


def emit_json(obj, path=None) -> None:
    """Write JSON to a file atomically, or print it when path is '-'."""
    if path == "-":
        json.dump(obj, sys.stdout, indent=2, default=str)
        print()
    elif path:
        atomic_write_json(path, obj)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
