"""Base backend (after Polygraphy's BaseRunner): public methods validate, subclasses write *_impl.

A backend also declares what it is, so that everything else (pick_backend, doctor, bench, train-export) iterates
the registry instead of naming backends: the file suffixes it reads, the library it imports and the pip extra that
installs it, the device kinds it runs on, the precisions it executes there, and its throughput runner.

It also declares how each precision's artifact is made (`made_by`): the exported FP32 ONNX itself (`exported`), its
own build (`builds`, `build_from`, `build_modules`, `calibrated`: `build()` turns the exported FP32 ONNX, or the
checkpoint it came from, into this backend's artifact, atomically, with a sidecar; a backend writes `build_impl`), or
`edgekit quantize` with the quantizer registered under its name (`quantized`, gated there against the FP32 baseline
that `baseline_backend` evaluates). train-export has one build path for every backend: it reads these.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ... import _imports
from ...errors import ArtifactError
from ..devices import parse_device

BUILD_SOURCES = ("onnx", "checkpoint")


class Backend:
    name = "base"
    suffixes: tuple[str, ...] = ()  # lower-case file suffixes it reads, e.g. (".onnx",)
    reads_folders = False  # True: a folder holding its model files is an artifact of this backend
    module: str | None = None  # the library it imports: availability, version and install hint
    extra: str | None = None  # the edgekit extra that installs that library
    device_kinds: tuple[str, ...] = ("cpu",)  # parse_device kinds it runs on
    executes: tuple[str, ...] = ("fp32",)  # precisions it runs on every device kind it runs on
    # how its artifact is built (see build())
    builds: tuple[str, ...] = ()  # precisions build() makes: () where edgekit does not build this format
    build_from = "onnx"  # what the build reads: "onnx" (the exported FP32 ONNX) or "checkpoint" (the .pt behind it)
    build_modules: tuple[str, ...] = ()  # converter libraries the build imports, beyond `module`
    build_extra: str | None = None  # the edgekit extra that installs them
    calibrated: tuple[str, ...] = ()  # precisions whose build needs a calibration set (CalibrationSet)
    # its artifact keeps the ONNX's second output, the pooled backbone (runtime.embedding); False: build() strips it
    carries_embedding = False
    exported: tuple[str, ...] = ()  # precisions whose artifact is the exported ONNX itself (no build)
    quantized: tuple[str, ...] = ()  # precisions `edgekit quantize` makes with this backend's quantizer (its gate)
    baseline_backend: str | None = None  # the backend that evaluates the FP32 ONNX for its quantize gate (None: itself)
    reference = False  # its exported FP32 row is the sweep's speed reference ("x ref") on every target it runs on
    short: str | None = None  # its name in tables and plots (None: name)

    def __init__(self, path, device: str = "cpu", meta=None, **options):
        self.path, self.device, self.meta, self.options = Path(path), device, meta, options
        self.loaded = False
        self._batch: int | None = 1  # load_impl sets the model's own: None when the batch is dynamic
        self.has_embedding = False  # load_impl sets it when the model gives the pooled-backbone output

    # what it is ------------------------------------------------------------------------------
    @classmethod
    def installed(cls) -> bool:
        """Its library can be imported here (checked without importing it; never raises)."""
        return cls.module is None or _imports.available(cls.module)

    @classmethod
    def install_hint(cls) -> str:
        return _imports.install_hint(cls.module or cls.name, cls.extra)

    @classmethod
    def runs_on(cls, device: str) -> bool:
        """The device's kind is one this backend runs on (by name: no library is imported)."""
        return parse_device(device)[0] in cls.device_kinds

    @classmethod
    def devices(cls) -> list[str]:
        """Devices it can run on here ([] when its library is missing); may import the library, never raises."""
        if not cls.installed():
            return []
        try:
            return cls.devices_impl()
        except Exception:  # a broken install is reported by describe(), not raised
            return []

    @classmethod
    def precisions(cls, device: str) -> tuple[str, ...]:
        """Precisions it executes on this device ('fp32', 'bf16', 'fp16', 'int8'); () where it does not run."""
        return cls.executes + cls.extra_precisions(device) if cls.runs_on(device) else ()

    @classmethod
    def extra_precisions(cls, device: str) -> tuple[str, ...]:
        """Precisions it executes on this device beyond `executes` (what the device says it has); never raises."""
        return ()

    @classmethod
    def offers(cls, target: str, explicit: bool = False) -> tuple[str, ...]:
        """Precisions train-export builds for it on the target; `explicit`: the user listed the precisions."""
        return cls.precisions(target)

    @classmethod
    def runner(cls, device: str):
        """The throughput runner class (runtime.concurrency) for this backend on this device."""
        from ..concurrency import Runner

        return Runner

    @classmethod
    def device_facts(cls, device: str) -> dict:
        """What this backend knows about a device, for a benchmark's record (e.g. OpenVINO's capabilities)."""
        return {}

    @classmethod
    def describe(cls) -> dict:
        """Installed version, install hint, devices and the builds edgekit makes, for `edgekit doctor`; never raises."""
        info = {"installed": cls.installed(), "version": _imports.version_of(cls.module) if cls.module else None,
                "install": cls.install_hint()}
        if cls.makes():  # how train-export makes each precision's artifact
            info["makes"] = {p: cls.made_by(p) for p in cls.makes()}
        if cls.builds:  # what edgekit builds for it, and whether its converters are here
            info["builds"] = {"precisions": list(cls.builds), "from": cls.build_from, "installed": cls.can_build(),
                              "install": _imports.install_hint(cls.build_modules[0] if cls.build_modules else cls.name,
                                                               cls.build_extra)}
        if not info["installed"]:
            return info
        try:
            info["devices"] = cls.devices_impl()
            info.update(cls.describe_impl())
        except Exception as e:  # a broken install is reported, not raised
            info["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        return info

    # how its artifact is built -----------------------------------------------------------------
    @classmethod
    def made_by(cls, precision: str) -> str | None:
        """How train-export makes this precision's artifact: 'exported', 'build', 'quantize', or None (it does not)."""
        return ("exported" if precision in cls.exported else "build" if precision in cls.builds
                else "quantize" if precision in cls.quantized else None)

    @classmethod
    def makes(cls) -> tuple[str, ...]:
        """Every precision train-export can make for it (see made_by)."""
        return tuple(dict.fromkeys(cls.exported + cls.builds + cls.quantized))

    @classmethod
    def can_build(cls, precision: str | None = None) -> bool:
        """It builds this precision (any, when None) and its converters are installed here; never imports them."""
        wanted = cls.builds if precision is None else (precision,) if precision in cls.builds else ()
        return bool(wanted) and cls.installed() and all(_imports.available(m) for m in cls.build_modules)

    @classmethod
    def build(cls, onnx_path, precision: str = "fp32", out_dir=None, calib=None, checkpoint=None, log=print,
              **opts) -> Path:
        """Build this backend's `precision` artifact from an exported FP32 ONNX and its sidecar; returns the model file.

        The artifact and its sidecar go to `out_dir` (default: `<backend>_<precision>` beside the ONNX), written in a
        temp folder beside it and renamed into place. `calib` (a CalibrationSet) is required for the precisions in
        `calibrated`; `checkpoint` (for `build_from = "checkpoint"`) defaults to the checkpoint the ONNX's sidecar
        names, whose sha256 must match the one recorded there.
        """
        from .build import build_artifact

        return build_artifact(cls, onnx_path, precision, out_dir, calib, checkpoint, log, **opts)

    @classmethod
    def build_impl(cls, source: Path, precision: str, folder: Path, meta, calib=None, log=print,
                   **opts) -> tuple[Path, dict]:
        """Write the artifact into `folder` from `source` (a private copy); (its model file, facts for the sidecar)."""
        raise NotImplementedError(f"the {cls.name} backend does not build artifacts")

    # public API -------------------------------------------------------------------------------
    def load(self) -> "Backend":
        if not self.loaded:
            self.load_impl()
            self.loaded = True
        return self

    def infer(self, blob: np.ndarray) -> np.ndarray:
        """Run a preprocessed NCHW batch of any size (split or zero-padded to a fixed batch); the first output."""
        if not self.loaded:
            self.load()
        if blob.ndim != 4 or blob.shape[1] != 3:
            raise ArtifactError(f"{self.path}: expected an NCHW batch with 3 channels, got shape {blob.shape}")
        return self.unpad([self.infer_impl(c) for c in self.chunks(blob)], blob.shape[0])

    def infer_embed(self, blob: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(the detection output, the pooled-backbone embedding (batch, channels) or None when the model has none)."""
        if not self.loaded:
            self.load()
        if not self.has_embedding:
            return self.infer(blob), None
        if blob.ndim != 4 or blob.shape[1] != 3:
            raise ArtifactError(f"{self.path}: expected an NCHW batch with 3 channels, got shape {blob.shape}")
        pairs = [self.infer_embed_impl(c) for c in self.chunks(blob)]
        n = blob.shape[0]
        return self.unpad([p[0] for p in pairs], n), self.unpad([p[1] for p in pairs], n)

    def chunks(self, blob: np.ndarray) -> list[np.ndarray]:
        """The blob cut into the batches this model takes, the last one zero-padded to the fixed batch."""
        fb, n = self.fixed_batch, blob.shape[0]
        if fb is None or fb == n:
            return [blob]
        out = [blob[s:s + fb] for s in range(0, n, fb)]
        k = out[-1].shape[0]
        if k < fb:
            out[-1] = np.concatenate([out[-1], np.zeros((fb - k, *blob.shape[1:]), blob.dtype)])
        return out

    @staticmethod
    def unpad(outputs: list[np.ndarray], n: int) -> np.ndarray:
        """The outputs of chunks() joined, without the padding rows: the first n."""
        out = outputs[0] if len(outputs) == 1 else np.concatenate(outputs)
        return out[:n]

    def close(self) -> None:
        if self.loaded:
            self.close_impl()
            self.loaded = False

    def __enter__(self):
        return self.load()

    def __exit__(self, *exc):
        self.close()

    @property
    def input_dtype(self):
        return np.float32

    @property
    def fixed_batch(self) -> int | None:
        """Batch size the loaded model requires, or None when the batch is dynamic."""
        return self._batch

    @property
    def precision_executed(self) -> str | None:
        """Precision the loaded model actually runs in: 'fp32', 'fp16', 'bf16', or 'int8+<float part>'."""
        fp = "fp16" if np.dtype(self.input_dtype) == np.float16 else "fp32"
        return f"int8+{fp}" if self.meta is not None and self.meta.precision == "int8" else fp

    def info(self) -> dict:
        return {"backend": self.name, "device": self.device, "precision_executed": self.precision_executed}

    # to implement -----------------------------------------------------------------------------
    @classmethod
    def devices_impl(cls) -> list[str]:
        return ["cpu"]

    @classmethod
    def describe_impl(cls) -> dict:
        """Further doctor facts (e.g. ONNX Runtime's execution providers)."""
        return {}

    def load_impl(self) -> None:
        raise NotImplementedError

    def infer_impl(self, blob: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def infer_embed_impl(self, blob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(detection output, embedding) of one chunk; only called when load_impl set has_embedding."""
        raise NotImplementedError

    def close_impl(self) -> None:
        pass
