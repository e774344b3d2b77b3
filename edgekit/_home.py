"""Keep third-party caches out of the user's home folder.

Two libraries edgekit uses write there when they are imported: ONNX Runtime its telemetry device id
(`~/.cache/Microsoft/DeveloperTools/.onnxruntime/`, under XDG_CACHE_HOME) and matplotlib its config and font cache
(`~/.config/matplotlib`, `~/.cache/matplotlib`, under MPLCONFIGDIR). While either is first imported, the variable it
reads points at a private temp folder of this process (edgekit-cache-<pid>-*, removed at exit), then is restored:
the user's environment is unchanged afterwards, and an MPLCONFIGDIR the user set is used as is.
- `import_module()`: how edgekit imports them itself (`_imports.require`);
- `redirect_imports()`: for the time of one CLI command, the same for imports made by other packages
  (Ultralytics and NNCF import matplotlib and ONNX Runtime themselves).
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import os
import sys
import threading

_lock = threading.RLock()
_private = None  # the TemporaryDirectory, made on first use


def _private_dir() -> str:
    global _private
    if _private is None:
        from .io import private_tempdir

        _private = private_tempdir("cache")
    return _private.name


@contextlib.contextmanager
def _env(var: str, value: str):
    old = os.environ.get(var)
    os.environ[var] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = old


def _after_onnxruntime(mod) -> None:
    """ONNX Runtime reads XDG_CACHE_HOME once, at import."""


def _after_matplotlib(mod) -> None:
    """matplotlib finds its config dir at import and its cache dir on first use: settle both now (both cached)."""
    mod.get_configdir()
    mod.get_cachedir()


# top-level module -> (environment variable it reads, whether a value the user set is kept, what to do after import)
REDIRECT = {"onnxruntime": ("XDG_CACHE_HOME", False, _after_onnxruntime),
            "matplotlib": ("MPLCONFIGDIR", True, _after_matplotlib)}


@contextlib.contextmanager
def _redirected(top: str):
    var, keep_user, _ = REDIRECT[top]
    if keep_user and os.environ.get(var):
        yield
        return
    with _lock, _env(var, _private_dir()):
        yield


def import_module(name: str):
    """importlib.import_module, with ONNX Runtime's and matplotlib's home-folder caches sent to a private folder."""
    top = name.split(".")[0]
    if top not in REDIRECT or top in sys.modules:
        return importlib.import_module(name)
    with _redirected(top):
        mod = importlib.import_module(name)
        REDIRECT[top][2](sys.modules[top])
    return mod


class _Finder(importlib.abc.MetaPathFinder):
    """Finds ONNX Runtime and matplotlib with the other finders, and runs their first import redirected."""

    def find_spec(self, name, path, target=None):
        if name not in REDIRECT:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run = loader.exec_module

        def exec_module(module, _run=run, _name=name):
            with _redirected(_name):
                _run(module)
                REDIRECT[_name][2](module)

        loader.exec_module = exec_module  # this loader instance serves this one module
        return spec


@contextlib.contextmanager
def redirect_imports():
    """For the time of a CLI command: whoever imports ONNX Runtime or matplotlib first, their caches go private."""
    finder = _Finder()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(finder)
