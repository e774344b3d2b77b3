"""Where a distributed sweep keeps artifacts and stage records: a shared folder, or a pyarrow.fs URI behind mirrors.

A local path is a folder every node sees at the same path (a shared mount): tasks read and write it directly and
pull/push do nothing. A URI (s3://, gs://, hdfs://, file://, ...) is mirrored into a node-local folder whose path is
derived from the URI alone, so the absolute paths written into stage records are the same on every node; a task pulls
what it needs before it starts and pushes what it wrote when a stage finishes.

Skip rule (pull and push): a file is not transferred when both sides have the same size and the same modification time
to the nanosecond, and that time has a sub-second part. Every transfer stamps the local copy with the remote file's
time, so a local edit (a new time) or a remote rewrite (a new time) is always transferred. Stores whose clocks are
whole seconds (S3, some NFS) can hide a same-size rewrite within one second, so there every file is always transferred.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path

from ..errors import EdgekitError, MissingDependency

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")  # two characters at least: C:\ is a drive, not a scheme
_PART = ".edgekit-part-"  # temp names of uploads in flight; never pulled, never pushed
_OBJECT_STORES = {"s3", "gcs", "abfs"}  # a single-object PUT is atomic: no temp name, no move (a move is a copy there)
_CHUNK = 1 << 20


def _pyarrow_fs():
    """pyarrow.fs, or MissingDependency naming the ray extra."""
    try:
        import pyarrow.fs as pafs
    except ImportError as e:
        hint = "pip install 'edgekit[ray]'"
        if isinstance(e, ModuleNotFoundError):
            raise MissingDependency(f"pyarrow is not installed (needed for --storage URIs): {hint}") from e
        raise MissingDependency(f"pyarrow is installed but failed to import (needed for --storage URIs): {e}") from e
    return pafs


def _normalize(spec: str) -> str:
    """The URI with its scheme in lower case and no trailing slash on its path (the query is kept)."""
    scheme, rest = spec.split(":", 1)
    path, sep, query = rest.partition("?")
    stripped = path.rstrip("/")
    return f"{scheme.lower()}:{stripped or path}{sep}{query}"


def _display(uri: str) -> str:
    """The URI as messages show it: without user:secret@ and without the query (either may hold credentials)."""
    head = uri.split("?", 1)[0]
    return re.sub(r"^([^:]+://)[^/@]*@", r"\1", head)


def _bad(value: str, reason: str) -> EdgekitError:
    return EdgekitError(f"--storage: {value}: {reason}")


def _one_line(e: Exception) -> str:
    lines = [s.strip() for s in str(e).splitlines() if s.strip()]
    return lines[0] if lines else type(e).__name__


def _same(st: os.stat_result, info) -> bool:
    """True when a local file and a remote one are the same by the module's skip rule."""
    m = info.mtime_ns
    return m is not None and m % 1_000_000_000 != 0 and info.size == st.st_size and m == st.st_mtime_ns


def _check_rel(rel: str) -> str:
    """A relative posix path inside the storage ('' is the storage itself)."""
    rel = str(rel).replace(os.sep, "/").strip("/")
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"storage path must stay inside the storage: {rel!r}")
    return "/".join(parts)


class Storage:
    """The storage of a distributed sweep: a shared folder, or a pyarrow.fs URI mirrored into a node-local folder."""

    def __init__(self, spec: str, mirror_base: Path | None = None):
        spec = str(spec).strip()
        if not spec:
            raise _bad("''", "empty: give a folder every node sees, or a URI such as s3://bucket/prefix")
        self._mirror_base = os.path.abspath(mirror_base) if mirror_base is not None else None
        self._fs = self._base = None
        if _SCHEME.match(spec):
            self.uri = _normalize(spec)
            self._open()  # bad URIs fail here, on the driver, as one line
        else:
            self.uri = os.path.abspath(os.path.expanduser(spec))  # no symlink resolution: the path nodes share
            if os.path.exists(self.uri) and not os.path.isdir(self.uri):
                raise _bad(self.uri, "is a file, not a folder")

    @property
    def is_remote(self) -> bool:
        return bool(_SCHEME.match(self.uri))

    @property
    def root(self) -> Path:
        """The local folder tasks read and write: the shared folder, or this URI's mirror on this node."""
        if not self.is_remote:
            return Path(self.uri)
        base = Path(self._mirror_base) if self._mirror_base else Path(tempfile.gettempdir()) / "edgekit-storage"
        return base / hashlib.sha256(self.uri.encode()).hexdigest()[:16]

    def __str__(self) -> str:
        return _display(self.uri) if self.is_remote else self.uri

    def __repr__(self) -> str:
        return f"Storage({str(self)!r})"

    def __getstate__(self):
        return {"uri": self.uri, "_mirror_base": self._mirror_base}  # strings only: the filesystem opens per process

    def __setstate__(self, state):
        self.__dict__.update(state, _fs=None, _base=None)

    def _open(self):
        """This process's pyarrow filesystem and the URI's path in it, opened on first use."""
        if self._fs is None:
            pafs = _pyarrow_fs()
            from pyarrow.lib import ArrowException

            try:
                fs, base = pafs.FileSystem.from_uri(self.uri)
            except (ArrowException, ValueError, OSError) as e:  # ArrowInvalid, a missing libjvm, no network...
                reason = _one_line(e).replace(self.uri, _display(self.uri))  # pyarrow may quote the URI, secrets too
                raise _bad(_display(self.uri), f"pyarrow.fs cannot open it: {reason}") from e
            base = base.rstrip("/")
            if not base:
                raise _bad(_display(self.uri), "the URI names no bucket or folder")
            self._fs, self._base = fs, base
        return self._fs

    def _remote(self, rel: str) -> str:
        self._open()
        return f"{self._base}/{rel}" if rel else self._base

    def pull(self, rel: str = "", *, prune: bool = False) -> Path:
        """Bring <storage>/<rel> (a file or a folder) into the mirror; return its local path (none remotely: no error).

        prune=True also deletes local files under rel that the storage does not have (only for a folder no other
        task on this node writes at the same time).
        """
        rel = _check_rel(rel)
        local = self.root / rel if rel else self.root
        if not self.is_remote:
            return local
        fs, src = self._open(), self._remote(rel)
        pafs = _pyarrow_fs()
        info = fs.get_file_info(src)
        if info.type == pafs.FileType.File:
            if local.is_dir():
                shutil.rmtree(local)
            self._download(info, local)
            return local
        if info.type != pafs.FileType.Directory:
            if prune:
                _remove(local)
            return local
        if local.exists() and not local.is_dir():
            local.unlink()
        local.mkdir(parents=True, exist_ok=True)
        keep = set()
        for item in fs.get_file_info(pafs.FileSelector(src, recursive=True, allow_not_found=True)):
            sub = _inside(item.path, src)
            if sub is None or _PART in Path(sub).name:
                continue
            keep.add(sub)
            dst = local / sub
            if item.type == pafs.FileType.Directory:
                if dst.exists() and not dst.is_dir():
                    dst.unlink()
                dst.mkdir(parents=True, exist_ok=True)
            elif item.type == pafs.FileType.File:
                if dst.is_dir():
                    shutil.rmtree(dst)
                self._download(item, dst)
        if prune:
            _prune(local, keep)
        return local

    def push(self, rel: str = "") -> None:
        """Upload mirror/<rel> (a file or a folder) to the storage, each file atomically; nothing deleted remotely."""
        rel = _check_rel(rel)
        if not self.is_remote:
            return
        local = self.root / rel if rel else self.root
        if not local.exists():
            return
        fs, dst = self._open(), self._remote(rel)
        pafs = _pyarrow_fs()
        if local.is_file():
            self._upload(local, dst, fs.get_file_info(dst))
            return
        remote = {}
        for item in fs.get_file_info(pafs.FileSelector(dst, recursive=True, allow_not_found=True)):
            sub = _inside(item.path, dst)
            if sub is not None:
                remote[sub] = item
        for path in sorted(local.rglob("*")):
            if path.is_file() and _PART not in path.name:
                sub = path.relative_to(local).as_posix()
                self._upload(path, f"{dst}/{sub}", remote.get(sub))

    def _download(self, info, dst: Path) -> None:
        """Copy one remote file to dst atomically, stamped with the remote time; skip it when already the same."""
        if dst.is_file() and _same(dst.stat(), info):
            return
        from ..io import atomic_path

        with atomic_path(dst) as tmp:
            with self._fs.open_input_stream(info.path) as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)
            if info.mtime_ns is not None:
                os.utime(tmp, ns=(tmp.stat().st_atime_ns, info.mtime_ns))

    def _upload(self, src: Path, dst: str, info) -> None:
        """Write one local file to dst (temp name, then move, where moves exist); stamp the local file with its time."""
        fs = self._fs
        pafs = _pyarrow_fs()
        if info is not None and info.type == pafs.FileType.File and _same(src.stat(), info):
            return
        direct = fs.type_name in _OBJECT_STORES
        parent, _, name = dst.rpartition("/")
        target = dst if direct else f"{parent}/.{name}{_PART}{uuid.uuid4().hex[:12]}"
        if not direct and parent:
            fs.create_dir(parent, recursive=True)
        try:
            with open(src, "rb") as f, fs.open_output_stream(target) as out:
                shutil.copyfileobj(f, out, _CHUNK)
            written = fs.get_file_info(target)  # before the move: a rename keeps the time, and no other writer races us
            if not direct:
                fs.move(target, dst)
        except BaseException:
            if not direct:
                _quiet_delete(fs, target)
            raise
        if written.mtime_ns is not None and written.size == src.stat().st_size:
            os.utime(src, ns=(src.stat().st_atime_ns, written.mtime_ns))


def _inside(path: str, base: str) -> str | None:
    """path relative to base, or None when it is not below it."""
    prefix = base.rstrip("/") + "/"
    return path[len(prefix):] if path.startswith(prefix) and len(path) > len(prefix) else None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _prune(local: Path, keep: set[str]) -> None:
    """Delete files and folders under local whose relative path is not in keep (deepest first)."""
    for path in sorted(local.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.relative_to(local).as_posix() not in keep:
            _remove(path)


def _quiet_delete(fs, path: str) -> None:
    """Remove a temp upload after a failure; the original error is the one to report."""
    try:
        fs.delete_file(path)
    except Exception:  # the temp may not exist (the write failed before creating it)
        pass
