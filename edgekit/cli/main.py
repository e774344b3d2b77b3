"""`edgekit` entry point. Every command module defines NAME, HELP, add_arguments(parser) and run(args)."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from contextlib import ExitStack

from .. import __version__
from ..errors import EdgekitError

# the order commands are listed in --help; modules not listed here are appended
ORDER = ["advise", "train", "export", "quantize", "eval", "bench", "train-export", "report", "doctor"]


def _commands():
    import edgekit.cli as pkg

    mods = []
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_") or info.name == "main":
            continue
        mod = importlib.import_module(f"edgekit.cli.{info.name}")
        if hasattr(mod, "NAME") and hasattr(mod, "run"):
            mods.append(mod)
    rank = {n: i for i, n in enumerate(ORDER)}
    return sorted(mods, key=lambda m: (rank.get(m.NAME, len(ORDER)), m.NAME))


def _verbosity_flags(p: argparse.ArgumentParser, default) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("-v", "--verbose", action="store_true", default=default,
                   help="also show third-party logs (NNCF, Ultralytics, OpenVINO, ONNX Runtime) and debug messages")
    g.add_argument("-q", "--quiet", action="store_true", default=default, help="show errors only")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgekit", description="Dataset to a fast, accurate detector on your device: "
                                     "fine-tune, export, quantize, evaluate and benchmark, then choose by measurement.")
    parser.add_argument("--version", action="version", version=f"edgekit {__version__}")
    _verbosity_flags(parser, False)
    flags = argparse.ArgumentParser(add_help=False)  # the same flags after the command name
    _verbosity_flags(flags, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _commands():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP), parents=[flags])
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    from .._log import cli_logging

    if args.verbose and args.quiet:
        parser.error("-v/--verbose and -q/--quiet exclude each other")
    try:
        with ExitStack() as stack:
            stack.enter_context(cli_logging(1 if args.verbose else -1 if args.quiet else 0,
                                            json_stdout=getattr(args, "json", None) == "-"))
            code = args._run(args)
        return int(code or 0)
    except EdgekitError as e:
        msg = " ".join(str(e).split())  # always one line
        print(f"edgekit {args.command}: error: {msg}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"edgekit {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
