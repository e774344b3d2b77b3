"""The checksums tests compare before and after a command: sha256 of every file under a folder, by relative path."""
from __future__ import annotations

import hashlib
from pathlib import Path


def tree_sha256(folder) -> dict[str, str]:
    """sha256 of every file under folder, by relative POSIX path (the file list is part of the result)."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}
