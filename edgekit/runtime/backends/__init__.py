"""Inference backends behind one small interface, each imported lazily by name.

Adding a backend is one file (a Backend subclass declaring its facts) and one line: `register(name, "module:Class")`,
here for edgekit's own, in your code for yours, or as an entry point in the group `edgekit.backends` of your
package (`toy = "mypkg.toy:ToyBackend"`), which every edgekit process (the CLI included) reads.
"""
from __future__ import annotations

from pathlib import Path

from ..._registry import Registry
from ...errors import ArtifactError
from .base import Backend

REGISTRY = Registry("backend", "edgekit.backends")
register = REGISTRY.register
names = REGISTRY.names  # registered backend names, edgekit's own first (entry points included)

register("onnxruntime", "edgekit.runtime.backends.onnxruntime:OnnxRuntimeBackend")
register("openvino", "edgekit.runtime.backends.openvino:OpenVINOBackend")
register("tensorrt", "edgekit.runtime.backends.tensorrt:TensorRTBackend")
register("torch", "edgekit.runtime.backends.torch:TorchBackend")
register("ncnn", "edgekit.runtime.backends.ncnn:NcnnBackend")
register("litert", "edgekit.runtime.backends.litert:LiteRTBackend")
register("executorch", "edgekit.runtime.backends.executorch:ExecuTorchBackend")


def get_backend(name: str) -> type[Backend]:
    """The backend class registered as `name` (ArtifactError, one line, when unknown or when it fails to import)."""
    return REGISTRY.get(name)


def registered() -> dict[str, type[Backend]]:
    """Every backend class that loads, by name; one that does not is left out with one warning (once)."""
    return REGISTRY.loaded()


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
