"""Where a command writes: never inside or over the user's inputs, and one run per output folder at a time.

`claim_output(out, inputs, command=...)` is the first thing every command that owns an output folder does: it
refuses, before creating anything, an output that would land in or over an input (`check_outputs`), then takes the
folder's lock (an flock on `out/.edgekit.lock`, released by the OS when the process ends, however it ends). A second
run into the same folder is refused with the holder's pid. Only the driver (the command's own process) locks: the
stages it runs in this process or in Ray workers write under the folder it holds.

Inputs are paths, symlinks resolved, of three kinds:
- a file (weights, a data.yaml, model.onnx and its sidecar): no output file may be it, and a command that owns its
  whole output folder (files=None: train, train-export, deploy) may not hold it inside that folder either;
- a folder (image and label folders, an artifact folder, calibration images, a merged run): the output is neither
  it nor inside it, nor (owning its folder) around it;
- Home(folder), a folder that holds inputs without being a dataset (a data.yaml's or COCO json's folder that is not
  the dataset root, e.g. a project folder whose data.yaml points at `path: ../datasets/x`): no output folder is it,
  and one that a command owns is not around it either; a new subfolder of it is allowed, and so is one output file
  in it (eval --json, its name checked). A dataset root (the folder holding images/ and labels/) is an input folder
  like the others: nothing is written anywhere inside it.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import EdgekitError

LOCK_NAME = ".edgekit.lock"


class OutputRefused(EdgekitError):
    """An output would be written inside or over an input."""


class OutputBusy(EdgekitError):
    """Another edgekit run holds the output folder."""


@dataclass(frozen=True)
class Home:
    """A folder that holds inputs: outputs may go in a new subfolder of it, not into it."""

    path: object


def _real(p) -> Path:
    return Path(os.path.realpath(os.path.expanduser(str(p))))


def _violation(o: Path, raw, home: bool, files, single: bool) -> tuple[int, str, str] | None:
    """(priority, how the output meets the input `raw`, the input's kind) or None; the lowest priority is reported,
    the most direct overlap: is, would write over, contains, is inside."""
    p = _real(raw)
    if not p.exists():
        return None
    kind = "input folder" if p.is_dir() else "input file"
    for name in files or ():
        q = _real(o / name)
        if q == p or q in p.parents:
            return 1, f"would write {o / name} over", kind
    if home and single:
        return None  # one named output file (eval --json) may go beside inputs that are not a dataset
    if o == p:  # (for one named file, `out` is its folder: the file is inside this input)
        return (3 if single else 0), "is", kind
    if p in o.parents and (p.is_file() or not home):
        return 3, "is inside", kind
    if files is None and o in p.parents:
        return 2, "contains", kind
    return None


def _first(out, inputs, files, single: bool = False):
    """The most direct overlap of `out` with the inputs: (priority, relation, kind, input as given) or None."""
    o = _real(out)
    found = []
    for item in inputs:
        home = isinstance(item, Home)
        raw = item.path if home else item
        if raw is None or str(raw) == "":
            continue
        v = _violation(o, raw, home, files, single)
        if v:
            found.append((*v, raw))
    return min(found, key=lambda v: v[0]) if found else None


def _refuse(what: str, shown, rel: str, kind: str, raw) -> None:
    raise OutputRefused(f"{what} {shown} {rel} the {kind} {raw}: edgekit never writes into or over its inputs; "
                        f"choose another {what}")


def check_outputs(out, inputs=(), files=None, what: str = "-o") -> None:
    """Refuse (OutputRefused, one line naming both paths) an output folder that overlaps an input.

    files: the names the command writes in `out`; None when it owns the whole folder.
    """
    v = _first(out, inputs, files)
    if v:
        _refuse(what, out, v[1], v[2], v[3])


def check_output_file(path, inputs=(), what: str = "--json") -> None:
    """Refuse an output file that is an input or lies in an input folder; '-' (stdout) and None pass."""
    if path is None or str(path) == "-":
        return
    p = Path(path)
    v = _first(p.parent, inputs, [p.name], single=True)
    if v:
        _refuse(what, path, "would overwrite" if v[0] == 1 else "is inside", v[2], v[3])


def data_inputs(data) -> list:
    """A dataset's inputs, from a data.yaml / COCO json path or a loaded Dataset, without reading its images.

    yaml: the file, Home(its folder), the dataset root, each split's folders and their labels/ twins (or list files);
    COCO json: the file, Home(its folder) and the images/ folders its images are looked up in. A file that does not
    load gives just the file and Home(its folder): the command's own loader then reports what is wrong with it.
    """
    if data is None:
        return []
    from .data.dataset import Dataset, load_dataset
    from .errors import DataError

    ds = data
    if not isinstance(data, Dataset):
        p = Path(data)
        if p.suffix.lower() == ".json":  # not loaded here: a COCO file's samples are read (and checked) eagerly
            return _coco_inputs(p)
        try:
            ds = load_dataset(p)
        except (DataError, OSError):
            return [p] if p.is_dir() else [p, Home(p.parent)]
    src = Path(ds.source)
    if src.suffix.lower() == ".json":
        return _coco_inputs(src)
    out = [src, Home(src.parent)]
    for paths in ds.split_paths.values():
        for p in paths:
            p = Path(p)
            out.append(p)
            parts = p.parts
            if "images" in parts:
                i = len(parts) - 1 - parts[::-1].index("images")
                out.append(Path(*parts[:i], "labels", *parts[i + 1:]))
                out.append(Path(*parts[:i]))  # the dataset root (images/ and labels/ live in it): all input
            out.append(Home(p.parent))
    return out


def _coco_inputs(path: Path) -> list:
    """A COCO json, its folder, and the folders its images are looked up in (edgekit.data.dataset)."""
    return [path, Home(path.parent), path.parent / "images", path.parent.parent / "images"]


def artifact_inputs(path) -> list:
    """An artifact and what loads with it: the file and its sidecar (.json), an OpenVINO .bin, or its folder."""
    if path is None:
        return []
    p = Path(path)
    if p.is_dir():
        return [p]
    return [p, p.with_suffix(".json"), p.with_suffix(".bin")] if p.suffix else [p]


# --- the run-folder lock ------------------------------------------------------------------------------------------

_held: dict[Path, tuple[int, int]] = {}  # resolved folder -> (thread id, depth) in this process
_held_guard = threading.Lock()


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 200).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    pid, _, command = text.partition(" ")
    return f"pid {pid}, edgekit {command}" if pid.isdigit() else "pid unknown"


@contextmanager
def lock_output(out, command: str = ""):
    """Hold `out`'s lock (creating the folder) for the block; OutputBusy if another process or thread holds it."""
    out = Path(out)
    key = _real(out)
    me = threading.get_ident()
    with _held_guard:
        owner = _held.get(key)
        if owner and owner[0] == me:  # nested claim of the same folder in this thread
            _held[key] = (me, owner[1] + 1)
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield out
        finally:
            with _held_guard:
                _held[key] = (me, _held[key][1] - 1)
        return
    if owner:
        raise OutputBusy(f"{out}: another run in this process is writing to this output folder; wait for it to "
                         f"finish or choose another output folder")
    if out.exists() and not out.is_dir():
        raise OutputRefused(f"{out}: is a file, not a folder; choose another output folder")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    fd = _acquire(out)
    try:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()} {command}\n".encode())
        with _held_guard:
            _held[key] = (me, 1)
        try:
            yield out
        finally:
            with _held_guard:
                _held.pop(key, None)
            (out / LOCK_NAME).unlink(missing_ok=True)  # while still holding it: nothing of ours stays behind
            if created and not any(out.iterdir()):
                out.rmdir()  # a run that failed before writing anything leaves no empty folder
    finally:
        os.close(fd)  # releases the flock (the OS does the same when the process dies)


def _acquire(out: Path) -> int:
    """An fd of out/.edgekit.lock holding its flock; OutputBusy naming the holder if another process has it.

    The file is removed when released, so a run that opened it just before may hold a removed file: it then
    retries on the file now at that path.
    """
    try:
        import fcntl
    except ImportError:  # no flock (Windows): no lock
        fcntl = None
    path = out / LOCK_NAME
    for _ in range(10):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise OutputBusy(f"{out}: another edgekit run is writing to this output folder ({holder}); wait for it "
                             f"to finish or choose another output folder") from None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
    raise OutputBusy(f"{out}: could not take the output folder's lock {path} (it keeps being replaced)")


@contextmanager
def claim_output(out, inputs=(), files=None, command: str = "", what: str = "-o"):
    """check_outputs, then lock_output: what a command that writes into `out` does before anything else."""
    check_outputs(out, inputs, files=files, what=what)
    with lock_output(out, command) as o:
        yield o
