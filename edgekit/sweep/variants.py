"""What the sweep builds: the backend x precision pairs (variants) on a target, and the packages they need."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Variant:
    backend: str
    precision: str


DEFAULT_PRECISIONS = ("fp32", "bf16", "int8")  # bf16: only where the target runs it (else the row is left out)


REFERENCE = "onnxruntime"  # its FP32 row, the exported ONNX itself, is measured on every target but CUDA


def variants_for(target: str, backends: list[str], precisions: list[str] | None = None) -> list[Variant]:
    """Backend x precision pairs that make sense on the target device (None: the default precisions).

    Each registered backend says which precisions it offers on the target (Backend.offers); names that are not
    registered, and backends not installed here, give no rows. An explicitly asked bf16 stays even where the
    target lacks it: its row then says why it was not built.
    """
    from ..runtime.backends import BACKENDS, get_backend
    from ..runtime.devices import parse_device

    explicit = precisions is not None
    precisions = list(precisions) if explicit else list(DEFAULT_PRECISIONS)
    out = []
    off_cuda = not parse_device(target)[0].startswith("cuda")
    if off_cuda and REFERENCE not in backends and get_backend(REFERENCE).installed():
        out.append(Variant(REFERENCE, "fp32"))
    for b in backends:
        cls = get_backend(b) if b in BACKENDS else None
        if cls is None or not cls.installed():
            continue
        offered = cls.offers(target, explicit)
        out += [Variant(b, p) for p in precisions if p in offered]
    return out


PRECISIONS = ("fp32", "bf16", "fp16", "int8")
# the backends Pipeline.build builds by name; every other backend is swept through the build it declares
# (Backend.build, its `builds`), and train-export refuses up front one that declares none (torch, a plugin without one)
SWEPT_BACKENDS = ("onnxruntime", "openvino", "tensorrt")
TRAINING = (("torch", "train", "training"), ("ultralytics", "train", "training"), ("onnx", "train", "the ONNX export"))


def check_dependencies(target: str, backends: list[str], precisions: list[str] | None) -> None:
    """Before any work: MissingDependency, naming the pip extra, for the first package the sweep needs that is not
    installed: training and export, the mAP evaluator, each asked backend's runtime and, for INT8, its quantizer."""
    from .. import _imports
    from ..errors import MissingDependency
    from ..quantize import BACKENDS as QUANTIZERS, quantizer_class
    from ..runtime.backends import get_backend

    needs = [(m, _imports.install_hint(m, extra), why) for m, extra, why in TRAINING]
    if not any(_imports.available(m) for m in ("faster_coco_eval", "pycocotools")):
        needs.append(("faster_coco_eval", _imports.install_hint("faster_coco_eval"), "the mAP of every row"))
    for b in backends:
        cls = get_backend(b)
        if cls.module:
            needs.append((cls.module, cls.install_hint(), f"--backends {b}"))
        if "int8" in (precisions or DEFAULT_PRECISIONS) and b in QUANTIZERS:
            needs += [(m, _imports.install_hint(m), f"{why}, --precisions int8")
                      for m, why in quantizer_class(b).requires]
    for module, hint, why in needs:
        if not _imports.available(module):
            raise MissingDependency(f"{module} is not installed (train-export needs it for {why}): {hint}")

