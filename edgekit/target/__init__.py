"""Where a measurement runs: here, or on a device reached over SSH that runs its own runtime-only edgekit.

A top-level package (not under sweep/) because bench, eval and doctor use it as much as train-export does.
"""
from __future__ import annotations

from .ssh import SshTarget, parse_target

__all__ = ["SshTarget", "parse_target", "is_remote"]


def is_remote(target) -> bool:
    """True for an ssh:// target (a string or an SshTarget)."""
    return isinstance(target, SshTarget) or (isinstance(target, str) and target.startswith("ssh://"))
