"""Errors that the command line turns into one line and a non-zero exit."""
from __future__ import annotations


class EdgekitError(Exception):
    """Base class: the message is shown to the user as is, without a traceback."""

    exit_code = 2


class DataError(EdgekitError):
    """A dataset file is missing, unreadable or malformed."""

    def __init__(self, path, message: str, line: int | None = None):
        self.path, self.line, self.reason = str(path), line, message
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")


class MissingDependency(EdgekitError):
    """An optional package is not installed; the message names the pip extra."""

    exit_code = 3


class ArtifactError(EdgekitError):
    """A model artifact or its sidecar is missing, inconsistent or built for another device."""


class AccuracyGateError(EdgekitError):
    """A quantized artifact lost more accuracy than allowed."""

    exit_code = 4
