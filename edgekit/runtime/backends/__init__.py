"""Inference backends behind one small interface, each imported lazily by name.

Adding a backend is one file (a Backend subclass declaring its facts) and one line: `register(name, "module:Class")`,
here for edgekit's own, in your code for yours, or as an entry point in the group `edgekit.backends` of your
package (`toy = "mypkg.toy:ToyBackend"`), which every edgekit process (the CLI included) reads.
"""
from __future__ import annotations

import importlib
import warnings
from pathlib import Path

from ...errors import ArtifactError
from .base import Backend

BACKENDS: dict[str, str] = {}  # name -> "module:Class", in order of preference
_classes: dict[str, type[Backend]] = {}
_entry_points_read = False
_broken: set[str] = set()  # backends whose module failed to import (warned once)


def register(name: str, target: str) -> None:
    """Make a backend known by name: `target` is "module:Class", imported when the backend is first asked for."""
    if ":" not in target:
        raise ArtifactError(f"backend '{name}': expected 'module:Class', got '{target}'")
    BACKENDS[name] = target
    _classes.pop(name, None)


register("onnxruntime", "edgekit.runtime.backends.onnxruntime:OnnxRuntimeBackend")
register("openvino", "edgekit.runtime.backends.openvino:OpenVINOBackend")
register("tensorrt", "edgekit.runtime.backends.tensorrt:TensorRTBackend")
register("torch", "edgekit.runtime.backends.torch:TorchBackend")
register("ncnn", "edgekit.runtime.backends.ncnn:NcnnBackend")
register("litert", "edgekit.runtime.backends.litert:LiteRTBackend")
register("executorch", "edgekit.runtime.backends.executorch:ExecuTorchBackend")


def _read_entry_points() -> None:
    """Register the backends other installed packages declare (group `edgekit.backends`), once."""
    global _entry_points_read
    if _entry_points_read:
        return
    _entry_points_read = True
    from importlib.metadata import entry_points

    for ep in entry_points(group="edgekit.backends"):
        if ep.name not in BACKENDS:
            register(ep.name, ep.value)


def names() -> list[str]:
    """Registered backend names, edgekit's own first."""
    _read_entry_points()
    return list(BACKENDS)


def get_backend(name: str) -> type[Backend]:
    if name not in names():
        raise ArtifactError(f"unknown backend '{name}' (choose from {', '.join(BACKENDS)})")
    if name not in _classes:
        mod, cls = BACKENDS[name].split(":")
        try:
            _classes[name] = getattr(importlib.import_module(mod), cls)
        except Exception as e:  # a plugin's module is other people's code: any failure is reported in one line
            reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise ArtifactError(f"backend '{name}' ({BACKENDS[name]}) cannot be loaded: "
                                f"{type(e).__name__}: {reason}") from None
    return _classes[name]


def registered() -> dict[str, type[Backend]]:
    """Every backend class that loads, by name; one that does not is left out with one warning (once)."""
    out = {}
    for n in names():
        try:
            out[n] = get_backend(n)
        except ArtifactError as e:
            if n not in _broken:
                _broken.add(n)
                warnings.warn(f"{e}; left out", stacklevel=1)
    return out


def pick_backend(path, device: str = "cpu") -> str:
    """The default backend for an artifact file and a device.

    Among the backends that read this suffix (or folder: those with a model file of theirs inside it): those that run
    on the device, then those installed here, then the first registered.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    every = registered()
    if p.is_dir():
        folders = [n for n, c in every.items() if c.reads_folders]
        inside = {f.suffix.lower() for f in p.iterdir() if f.is_file()}
        fits = [n for n in folders if inside & set(every[n].suffixes)] or folders
    else:
        fits = [n for n, c in every.items() if suffix in c.suffixes]
    if not fits:
        known = sorted({s for c in every.values() for s in c.suffixes})
        folder = " or a model folder" if any(c.reads_folders for c in every.values()) else ""
        raise ArtifactError(f"{p}: unknown model format '{suffix}' (expected {', '.join(known)}{folder})")
    fits = [n for n in fits if every[n].runs_on(device)] or fits
    return next((n for n in fits if every[n].installed()), fits[0])
