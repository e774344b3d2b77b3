"""A toy plugin backend with a build step of its own, the whole of it in one file.

Its format is the exported ONNX copied to `model.toyort`, run by ONNX Runtime on the CPU, FP32 only, with no
quantizer: so everything around it (Engine, eval, bench, doctor, quantize's refusal, train-export's build, eval and
bench stages, the report) meets a backend that edgekit does not name anywhere. Registered by one call,
`register("toyort", "toyort_backend:ToyOrtBackend")`, or by an entry point of group `edgekit.backends`.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from edgekit.runtime.backends.onnxruntime import OnnxRuntimeBackend


class ToyOrtBackend(OnnxRuntimeBackend):
    name = "toyort"
    suffixes = (".toyort",)
    device_kinds = ("cpu",)
    executes = ("fp32",)
    builds = ("fp32",)  # made by build_impl below, from the exported ONNX
    exported = quantized = ()  # not ONNX Runtime's: neither the ONNX itself nor edgekit quantize
    reference = False
    short = "TOY"

    @classmethod
    def offers(cls, target: str, explicit: bool = False) -> tuple[str, ...]:
        return cls.precisions(target)

    @classmethod
    def build_impl(cls, source: Path, precision: str, folder: Path, meta, calib=None, log=print,
                   **opts) -> tuple[Path, dict]:
        """The ONNX (a private copy) as model.toyort."""
        model = folder / "model.toyort"
        shutil.copyfile(source, model)
        return model, {"toyort": {"built_by": Path(__file__).name}}
