"""What the sweep builds: the backend x precision pairs (variants) on a target, and the packages they need."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Variant:
    backend: str
    precision: str


DEFAULT_PRECISIONS = ("fp32", "bf16", "int8")  # bf16: only where the target runs it (else the row is left out)


def reference() -> str | None:
    """The backend whose FP32 row (the exported ONNX itself) is the speed reference (Backend.reference), measured on
    every target but CUDA; None when no registered backend is one."""
    from ..runtime.backends import registered

    return next((n for n, c in registered().items() if c.reference), None)


def variants_for(target: str, backends: list[str], precisions: list[str] | None = None) -> list[Variant]:
    """Backend x precision pairs that make sense on the target device (None: the default precisions).

    Each registered backend says which precisions it offers on the target (Backend.offers) and how each is made
    (Backend.made_by); names that are not registered, and backends not installed here, give no rows. An explicitly
    asked bf16 stays even where the target lacks it: its row then says why it was not built.
    """
    from ..runtime.backends import get_backend, names
    from ..runtime.devices import parse_device

    explicit = precisions is not None
    precisions = list(precisions) if explicit else list(DEFAULT_PRECISIONS)
    out = []
    off_cuda = not parse_device(target)[0].startswith("cuda")
    ref = reference()
    if off_cuda and ref is not None and ref not in backends and get_backend(ref).installed():
        out.append(Variant(ref, "fp32"))
    for b in backends:
        cls = get_backend(b) if b in names() else None
        if cls is None or not cls.installed():
            continue
        offered = cls.offers(target, explicit)
        out += [Variant(b, p) for p in precisions if p in offered and cls.made_by(p)]
    return out


PRECISIONS = ("fp32", "bf16", "fp16", "int8")  # the common ones, in this order; a backend may declare others


def known_precisions() -> tuple[str, ...]:
    """Every precision some registered backend makes (Backend.makes: e.g. LiteRT's int8-dynamic), common ones first."""
    from ..runtime.backends import registered

    return tuple(dict.fromkeys(PRECISIONS + tuple(p for c in registered().values() for p in c.makes())))


TRAINING = (("torch", "train", "training"), ("ultralytics", "train", "training"), ("onnx", "train", "the ONNX export"))


def check_dependencies(target: str, backends: list[str], precisions: list[str] | None) -> None:
    """Before any work: MissingDependency, naming the pip extra, for the first package the sweep needs that is not
    installed: training and export, the mAP evaluator, each asked backend's runtime and, for INT8, its quantizer."""
    from .. import _imports
    from ..errors import MissingDependency
    from ..quantize import names as quantizers, quantizer_class
    from ..runtime.backends import get_backend

    needs = [(m, _imports.install_hint(m, extra), why) for m, extra, why in TRAINING]
    if not any(_imports.available(m) for m in ("faster_coco_eval", "pycocotools")):
        needs.append(("faster_coco_eval", _imports.install_hint("faster_coco_eval"), "the mAP of every row"))
    for b in backends:
        cls = get_backend(b)
        if cls.module:
            needs.append((cls.module, cls.install_hint(), f"--backends {b}"))
        quantized = [p for p in precisions or DEFAULT_PRECISIONS if cls.made_by(p) == "quantize"]
        if quantized and b in quantizers():
            needs += [(m, _imports.install_hint(m), f"{why}, --precisions {quantized[0]}")
                      for m, why in quantizer_class(b).requires]
    for module, hint, why in needs:
        if not _imports.available(module):
            raise MissingDependency(f"{module} is not installed (train-export needs it for {why}): {hint}")

