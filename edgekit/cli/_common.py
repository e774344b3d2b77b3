"""Small helpers shared by command modules: the command's result on stdout, progress through the edgekit logger."""
from __future__ import annotations

import argparse
import json

from .._log import LOG, adopt_third_party, out, text_out
from ..io import atomic_write_json


def emit_json(obj, path=None) -> None:
    """Write JSON to a file atomically, or print it on stdout (and nothing else there) when path is '-'."""
    if path == "-":
        json.dump(obj, out(), indent=2, default=str)
        print(file=out())
    elif path:
        atomic_write_json(path, obj)


def say(*parts) -> None:
    """Print part of the command's readable result: stdout, or stderr when stdout carries its JSON (--json -);
    nothing with -q."""
    stream = text_out()
    if stream is not None:
        print(*parts, file=stream, flush=True)


def log(msg: str) -> None:
    """Progress for the user: the edgekit logger at INFO (stderr; hidden by -q)."""
    adopt_third_party()
    LOG.info(msg)


def detail(msg: str) -> None:
    """What a stage says about its own steps: shown with -v and kept in a run log, not on the default console."""
    adopt_third_party()
    LOG.debug(msg)


log.detail = detail  # a caller running many stages (the pipeline) passes log.detail to each stage's functions


class SizeAction(argparse.Action):
    """--imgsz N or H,W (the comma form of every list option); the older space form `H W` is still read."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = " ".join(values)
        try:
            sizes = [int(v) for v in ",".join(values).split(",") if v.strip()]
        except ValueError:
            sizes = []
        if not 1 <= len(sizes) <= 2 or min(sizes) < 1:
            parser.error(f"{option_string} {given}: expected N or H,W in pixels, e.g. {option_string} 640 or "
                         f"{option_string} 640,480")
        setattr(namespace, self.dest, sizes)
