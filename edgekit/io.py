"""Atomic writes: a temp file in the same folder, then rename."""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    """The process umask: /proc/self/status on Linux, else set-and-restore (racy across threads, so a fallback)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


NO_SPACE = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _space_errno(exc: BaseException, tmp: Path) -> int | None:
    """ENOSPC / EFBIG / EDQUOT if that is why writing `tmp` failed: an OSError in the exception's chain, or, for a
    library that reports it otherwise (OpenVINO, torch), a full file system or a file at the file-size limit."""
    from .errors import EdgekitError

    if isinstance(exc, EdgekitError):  # a deliberate refusal from inside the block stays what it is
        return None
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in NO_SPACE:
            return exc.errno
        exc = exc.__cause__ or exc.__context__
    try:
        st = os.statvfs(tmp.parent)
        if (st.f_blocks and st.f_bavail == 0) or (st.f_files and st.f_favail == 0):  # btrfs reports 0 inodes
            return errno.ENOSPC
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY:
            files = [tmp] if tmp.is_file() else [f for f in tmp.rglob("*") if f.is_file()]
            if any(f.stat().st_size >= limit for f in files):
                return errno.EFBIG
    except (OSError, ImportError, AttributeError):  # no statvfs/resource (Windows), or tmp already gone
        pass
    return None


def space_reason(code: int) -> str:
    """Why a write failed, for ENOSPC / EFBIG / EDQUOT, in words."""
    return {errno.EFBIG: "file too large (over the file-size limit, ulimit -f)",
            errno.ENOSPC: "no space left on the device"}.get(code, os.strerror(code))


def _write_error(path: Path, code: int):
    from .errors import EdgekitError

    return EdgekitError(f"{path}: cannot write: {space_reason(code)}; any previous {path.name} is unchanged")


@contextmanager
def atomic_path(path, suffix: str | None = None):
    """Yield a temp path beside `path`; rename it over `path` only if the block succeeds.

    A write that fails for lack of space (ENOSPC, EFBIG, EDQUOT) raises an EdgekitError naming `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp made it 0600: give it the mode open() would have
        os.replace(tmp, path)
    except Exception as e:
        code = _space_errno(e, tmp)
        if code is None:
            raise
        raise _write_error(path, code) from e
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_dir(path):
    """Yield a temp folder beside `path`; it replaces `path` only if the block succeeds.

    A write that fails for lack of space (ENOSPC, EFBIG, EDQUOT) raises an EdgekitError naming `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        try:
            yield tmp
        except Exception as e:
            code = _space_errno(e, tmp)
            if code is None:
                raise
            raise _write_error(path, code) from e
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp made it 0700: give it the mode mkdir() would have
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_json(path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o):
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def sha256_file(path, chunk: int = 1 << 20) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


_OWNED_TMP = re.compile(r"^edgekit-[a-z]+-(\d+)-")


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill would terminate the process on Windows
        try:
            import psutil

            return psutil.pid_exists(pid)
        except ImportError:
            return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


def clean_stale_tempdirs(root=None) -> int:
    """Remove edgekit-<kind>-<pid>-* folders in the temp dir whose process is gone (after a kill); returns how many."""
    root = Path(root or tempfile.gettempdir())
    uid = os.getuid() if hasattr(os, "getuid") else None
    n = 0
    try:
        entries = list(root.iterdir())
    except OSError:
        return 0
    for p in entries:
        m = _OWNED_TMP.match(p.name)
        if not m or int(m.group(1)) == os.getpid() or p.is_symlink() or not p.is_dir():
            continue
        if (uid is not None and p.stat().st_uid != uid) or _pid_alive(int(m.group(1))):
            continue
        shutil.rmtree(p, ignore_errors=True)
        n += 1
    return n


class _PrivateTempDir(tempfile.TemporaryDirectory):
    """A TemporaryDirectory whose `with` block turns a write that failed for lack of space (a library writing its own
    files in it: Ultralytics' export, a checkpoint copy) into an EdgekitError naming the folder."""

    def __exit__(self, exc_type, exc, tb):
        code = _space_errno(exc, Path(self.name)) if isinstance(exc, Exception) else None
        super().__exit__(exc_type, exc, tb)
        if code is not None:
            from .errors import EdgekitError

            hint = " (TMPDIR can name a folder with more room)" if code != errno.EFBIG else ""
            raise EdgekitError(f"{self.name}: cannot write in edgekit's temporary folder: {space_reason(code)}{hint}") \
                from exc


def private_tempdir(kind: str) -> tempfile.TemporaryDirectory:
    """A TemporaryDirectory edgekit-<kind>-<pid>-XXXX (mode 0700); stale ones left by killed runs go first."""
    clean_stale_tempdirs()
    return _PrivateTempDir(prefix=f"edgekit-{kind}-{os.getpid()}-")
