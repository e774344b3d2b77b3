"""Lazy imports of optional packages with an install hint (after Optimum's import_utils)."""
from __future__ import annotations

import importlib
import importlib.metadata as md
import importlib.util
from functools import lru_cache

from .errors import MissingDependency

# module -> (pip extra, distribution names that provide it)
KNOWN = {
    "ray": ("ray", ("ray",)),
    "pyarrow": ("ray", ("pyarrow",)),
    "onnxruntime": ("onnxruntime", ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml")),
    "openvino": ("openvino", ("openvino", "openvino-nightly")),
    "nncf": ("openvino-quantize", ("nncf",)),
    "onnx": ("onnxruntime", ("onnx",)),
    "tensorrt": ("tensorrt", ("tensorrt", "tensorrt-cu12", "tensorrt-cu11", "tensorrt-cu13", "tensorrt_lean", "tensorrt-dispatch")),
    "torch": ("train", ("torch",)),
    "ultralytics": ("train", ("ultralytics",)),
    "faster_coco_eval": ("eval", ("faster-coco-eval",)),
    "pycocotools": ("eval", ("pycocotools",)),
    "matplotlib": ("dev", ("matplotlib",)),
    "super_gradients": ("nas", ("super-gradients",)),
    "pynvml": ("gpu", ("nvidia-ml-py",)),
    "fastapi": ("serve", ("fastapi",)),
    "uvicorn": ("serve", ("uvicorn",)),
    "prometheus_client": ("serve", ("prometheus-client",)),
    "tritonclient": ("examples", ("tritonclient",)),
    "mlperf_loadgen": ("bench", ("mlcommons-loadgen",)),
    "ncnn": ("ncnn", ("ncnn",)),
    "pnnx": ("ncnn-build", ("pnnx",)),
    "ai_edge_litert": ("litert", ("ai-edge-litert", "ai-edge-litert-nightly")),
    "ai_edge_quantizer": ("litert-build", ("ai-edge-quantizer", "ai-edge-quantizer-nightly")),
    "onnx2tf": ("litert-build", ("onnx2tf",)),
    "tensorflow": ("litert-build", ("tensorflow-cpu", "tensorflow")),
    "executorch": ("executorch", ("executorch",)),
    "torchao": ("executorch-build", ("torchao",)),
}


def install_hint(module: str, extra: str | None = None) -> str:
    """The pip command that installs a module: its edgekit extra (given, or known here), else the module itself."""
    extra = extra or KNOWN.get(module, (None,))[0]
    return f"pip install 'edgekit[{extra}]'" if extra else f"pip install {module}"


@lru_cache(maxsize=None)
def version_of(module: str) -> str | None:
    """Installed version of a module's distribution, or None; never raises."""
    for dist in KNOWN.get(module, (None, (module,)))[1]:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            continue
        except Exception:  # broken metadata must not crash detection
            return None
    return None


def available(module: str) -> bool:
    """True when the module can be found; never imports it, never raises."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, purpose: str = ""):
    """Import a module or raise MissingDependency naming the extra to install."""
    from ._home import import_module  # ONNX Runtime and matplotlib write into ~/.cache at import: not there

    try:
        mod = import_module(module)
    except ImportError as e:
        what = f" (needed for {purpose})" if purpose else ""
        top = module.split(".")[0]
        if available(top) and not isinstance(e, ModuleNotFoundError):
            raise MissingDependency(f"{module} is installed but failed to import{what}: {e}") from e
        raise MissingDependency(f"{module} is not installed{what}: {install_hint(top)}") from e
    from ._log import adopt_third_party

    adopt_third_party()  # inside a CLI command: route the new package's logger (its own handlers print to stdout)
    return mod


def require_any(modules: tuple[str, ...], purpose: str = ""):
    """Import the first of these modules that imports, or raise MissingDependency with the first one's hint."""
    for m in modules:
        if available(m.split(".")[0]):
            return require(m, purpose)
    return require(modules[0], purpose)


def tool_versions(*modules: str) -> dict:
    """edgekit, python, numpy and the installed versions of these modules, for a sidecar or train.json."""
    import platform

    import numpy as np

    from . import __version__

    v = {"edgekit": __version__, "python": platform.python_version(), "numpy": np.__version__}
    v.update({m: version_of(m) for m in modules if version_of(m)})
    return v
