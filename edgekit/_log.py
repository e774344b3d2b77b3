"""The `edgekit` logger, and how the command line routes what third-party code says.

The library writes only through the `log` callables it is given, or the `edgekit` logger (a NullHandler until an
application configures it); it changes no logger it does not own. The command line owns its process, and for the
time of one command `cli_logging()`:
- shows the `edgekit` logger's INFO on stderr (`-q`: errors only, `-v`: DEBUG);
- takes over the loggers of NNCF, Ultralytics, OpenVINO, ONNX Runtime, torch... (their own handlers print to
  stdout), Python warnings raised outside edgekit, records that would reach the root logger's last-resort handler,
  and whatever third-party code prints on stdout: all of it goes to the `edgekit.thirdparty` logger, shown only with
  `-v` (errors always);
- keeps the real stdout for the command's own result (`out()`), so `--json -` prints JSON only; with `-q` the
  readable result (`text_out()`) is not printed, only the JSON asked for with `--json -`.
`log_file()` adds a file that records edgekit at DEBUG and third-party packages at INFO (what they print by
default; their DEBUG, e.g. torch.autograd's, slows the work). Everything is restored on exit.
"""
from __future__ import annotations

import contextlib
import io
import logging
import sys
import warnings
from pathlib import Path

LOG = logging.getLogger("edgekit")
LOG.addHandler(logging.NullHandler())
OTHER = logging.getLogger("edgekit.thirdparty")  # third-party logs, warnings and stdout prints
THIRD_PARTY = ("nncf", "ultralytics", "openvino", "onnxruntime", "onnx", "onnxslim", "torch", "torchvision",
               "matplotlib", "PIL", "faster_coco_eval", "super_gradients")
_PKG = str(Path(__file__).resolve().parent)


class _Stderr(logging.StreamHandler):
    """A StreamHandler on whatever sys.stderr is when a record is written (pytest's capture swaps it)."""

    def __init__(self, level: int):
        super().__init__()
        self.setLevel(level)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


class _Forward(logging.Handler):
    """Hands records to another logger (a taken-over third-party logger, or the last-resort handler, to OTHER)."""

    def __init__(self, target: logging.Logger):
        super().__init__()
        self.target = target

    def emit(self, record):
        if record.levelno >= self.target.getEffectiveLevel():
            self.target.handle(record)


class _LineWriter(io.TextIOBase):
    """A text stream that logs each completed line (a carriage return starts the line over: progress bars)."""

    def __init__(self, logger: logging.Logger, level: int = logging.INFO):
        self.logger, self.level, self.buf = logger, level, ""

    def writable(self):
        return True

    @property
    def encoding(self):
        return "utf-8"

    def write(self, s: str) -> int:
        self.buf += s
        *lines, self.buf = self.buf.split("\n")
        for line in lines:
            line = line.rsplit("\r", 1)[-1].rstrip()
            if line.strip():
                self.logger.log(self.level, line)
        return len(s)

    def flush(self):
        pass


class _Session:
    """What one CLI command changed, to undo it."""

    def __init__(self, verbosity: int, stdout, json_stdout: bool):
        self.verbosity, self.stdout, self.json_stdout = verbosity, stdout, json_stdout
        self.console = _Stderr(logging.ERROR if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO)
        self.console.setFormatter(logging.Formatter("%(message)s"))
        self.third = _Stderr(logging.DEBUG if verbosity > 0 else logging.ERROR)
        self.third.setFormatter(logging.Formatter("%(message)s"))
        self.files: list[logging.Handler] = []
        self.saved: dict[str, tuple] = {}
        self.last_resort = logging.lastResort

    def own(self, logger: logging.Logger, handlers: list[logging.Handler], level: int) -> None:
        """Replace a logger's handlers and level (remembering them) and stop its propagation."""
        if logger.name not in self.saved:
            self.saved[logger.name] = (list(logger.handlers), logger.level, logger.propagate)
        logger.handlers = list(handlers)
        logger.propagate = False
        logger.setLevel(level)

    def adopt(self) -> None:
        """Take over the loggers of the third-party packages imported so far (their handlers print to stdout)."""
        for name in THIRD_PARTY:
            if name in sys.modules and name not in self.saved:
                # INFO, what they print by default: their DEBUG (torch.autograd, matplotlib fonts) costs time
                self.own(logging.getLogger(name), [_Forward(OTHER)], logging.INFO)
                for child, lg in list(logging.Logger.manager.loggerDict.items()):
                    if child.startswith(name + ".") and isinstance(lg, logging.Logger) and lg.handlers:
                        self.own(lg, [_Forward(OTHER)], lg.level)

    def restore(self) -> None:
        for name, (handlers, level, propagate) in self.saved.items():
            lg = logging.getLogger(name)
            lg.handlers, lg.propagate = handlers, propagate
            lg.setLevel(level)
        logging.lastResort = self.last_resort
        for h in self.files:
            h.close()


_session: _Session | None = None


def adopt_third_party() -> None:
    """Inside a CLI command: take over the loggers of third-party packages imported since the last call."""
    if _session is not None:
        _session.adopt()


def out() -> io.TextIOBase:
    """The real stdout (third-party prints are diverted from it while a command runs): the command's result."""
    return _session.stdout if _session is not None else sys.stdout


def text_out() -> io.TextIOBase | None:
    """Where a command's human-readable result goes: stdout, or stderr when stdout carries its JSON (--json -);
    None with -q (errors only)."""
    if _session is not None and _session.verbosity < 0:
        return None
    return sys.stderr if _session is not None and _session.json_stdout else out()


def _showwarning(message, category, filename, lineno, file=None, line=None):
    """Python warnings: edgekit's own as one WARNING line, anyone else's to the third-party log."""
    if str(filename).startswith(_PKG):
        LOG.warning(f"warning: {message}")
    else:
        OTHER.warning(f"{filename}:{lineno}: {category.__name__}: {message}")


@contextlib.contextmanager
def cli_logging(verbosity: int = 0, json_stdout: bool = False):
    """Route logs, warnings and third-party stdout for one command; verbosity -1 (-q), 0, 1 (-v)."""
    global _session
    prev = _session
    s = _session = _Session(verbosity, sys.stdout, json_stdout)
    s.own(LOG, [s.console], logging.DEBUG if verbosity > 0 else logging.INFO)
    s.own(OTHER, [s.third], logging.DEBUG)
    logging.lastResort = _Forward(OTHER)
    s.adopt()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(_LineWriter(OTHER)):
            warnings.showwarning = _showwarning
            yield s
    finally:
        s.restore()
        _session = prev


class _LazyFile(logging.FileHandler):
    """A log file (and its folder) created at the first record: a command refused up front leaves nothing behind.
    When the disk is full (or the file-size limit reached) the log stops with one warning line, not a traceback."""

    def __init__(self, path: Path):
        super().__init__(path, encoding="utf-8", delay=True)
        self.stopped = False

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()

    def emit(self, record):
        if not self.stopped:
            super().emit(record)

    def handleError(self, record):
        if not self._out_of_space(sys.exc_info()[1]):
            super().handleError(record)

    def close(self):
        try:
            super().close()  # flushes what is buffered: may fail the same way
        except OSError as e:
            if not self._out_of_space(e):
                raise

    def _out_of_space(self, exc) -> bool:
        """A write failed for lack of space: warn once, write no more."""
        from .io import NO_SPACE, space_reason

        if not isinstance(exc, OSError) or exc.errno not in NO_SPACE:
            return False
        if not self.stopped:
            self.stopped = True
            print(f"warning: {self.baseFilename}: cannot write the log: {space_reason(exc.errno)}; the log stops "
                  f"here", file=sys.stderr)
        return True


@contextlib.contextmanager
def log_file(path):
    """Inside cli_logging: also record everything (edgekit and third-party) at DEBUG in this file."""
    if _session is None:
        yield None
        return
    h = _LazyFile(Path(path))
    h.setLevel(logging.DEBUG)
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    s = _session
    s.files.append(h)
    for lg in (LOG, OTHER):
        lg.addHandler(h)
    level = LOG.level
    LOG.setLevel(logging.DEBUG)
    try:
        yield path
    finally:
        LOG.setLevel(level)
        for lg in (LOG, OTHER):
            lg.removeHandler(h)
        s.files.remove(h)
        h.close()
