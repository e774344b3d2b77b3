"""`edgekit` entry point. Every command module defines NAME, HELP, add_arguments(parser) and run(args)."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from contextlib import ExitStack, contextmanager

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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", help="edgekit COMMAND --help: its options")
    for mod in _commands():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP), parents=[flags])
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


@contextmanager
def _file_size_signal_ignored():
    """Over the file-size limit (ulimit -f) the kernel sends SIGXFSZ, which kills without a word: ignored for the
    command, the write fails with EFBIG instead and the atomic-write layer says which file could not be written."""
    import signal
    import threading

    if not hasattr(signal, "SIGXFSZ") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGXFSZ, previous)


def _stdout_closed() -> int:
    """The reader of stdout went away (`edgekit ... --json - | head`): stop quietly, as `cat` or `yes` would."""
    import os

    try:  # anything still buffered for stdout must not raise again at interpreter exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass
    return 141  # 128 + SIGPIPE: what a shell reports for a command that stopped on a closed pipe


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    from .._home import redirect_imports
    from .._log import cli_logging
    from ..io import NO_SPACE, space_reason

    if args.verbose and args.quiet:
        parser.error("-v/--verbose and -q/--quiet exclude each other")
    try:
        with ExitStack() as stack:
            stack.enter_context(_file_size_signal_ignored())
            stack.enter_context(redirect_imports())
            stack.enter_context(cli_logging(1 if args.verbose else -1 if args.quiet else 0,
                                            json_stdout=getattr(args, "json", None) == "-"))
            code = args._run(args)
        sys.stdout.flush()  # the real stdout again: a closed pipe shows here, not at interpreter exit
        return int(code or 0)
    except EdgekitError as e:
        msg = " ".join(str(e).split())  # always one line
        print(f"edgekit {args.command}: error: {msg}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:
        return _stdout_closed()
    except KeyboardInterrupt:
        print(f"edgekit {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        if e.errno not in NO_SPACE:
            raise
        # the last net: a write outside edgekit's atomic writes (a third-party library's own temp file); for a copy
        # the OSError names the source first and the file being written second
        target = e.filename2 or e.filename
        where = f"{target}: " if target else ""
        print(f"edgekit {args.command}: error: {where}cannot write: {space_reason(e.errno)}", file=sys.stderr)
        return EdgekitError.exit_code


if __name__ == "__main__":
    sys.exit(main())
