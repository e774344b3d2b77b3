"""Export an Ultralytics checkpoint to ONNX, check it, and write model.json beside it."""
from __future__ import annotations

import shutil
from pathlib import Path

from .._imports import require, tool_versions
from .._ultralytics import arch_of, ultralytics
from ..errors import ArtifactError, EdgekitError
from ..checkpoint import checked_copy
from ..io import atomic_path, private_tempdir, sha256_file
from ..outputs import check_outputs
from ..runtime.embedded_meta import embed_onnx
from ..runtime.meta import write_sidecar
from .parity import parity_check
from .sidecar import onnx_sidecar


def export_inputs(weights, parity_images=None) -> list:
    """What an export reads (for edgekit.outputs): the weights and the parity-check images."""
    return [weights, parity_images or None]


def _profile_inputs(profile) -> list:
    """What the drift profile reads: a dataset's files, or a folder of images."""
    from ..outputs import data_inputs

    if profile is None:
        return []
    return [profile] if isinstance(profile, (str, Path)) and Path(profile).is_dir() else data_inputs(profile)


def _with_embedding(onnx_model, model) -> dict | None:
    """Add the pooled-backbone output (in place); its sidecar record, or None where the backbone is not found."""
    from .embedding import EMBED_OUTPUT, add_embedding_output

    try:
        index = len(model.model.yaml["backbone"]) - 1
    except (AttributeError, KeyError, TypeError):
        return None
    channels = add_embedding_output(onnx_model, index)
    if channels is None:
        return None
    return {"output": EMBED_OUTPUT, "channels": channels, "layer": index, "pooling": "global average"}


def export_onnx(weights, out_dir=".", imgsz: int | tuple[int, int] = 640, opset: int | None = None,
                dynamic: bool = False, simplify: bool = True, parity_images=None, parity_tol: float = 1e-3,
                name: str = "model", log=print, trust_checkpoint: bool = False, profile=None) -> Path:
    """weights (.pt) -> out_dir/model.onnx + out_dir/model.json; returns the ONNX path.

    The graph gets a second output, the pooled backbone features (edgekit.export.embedding), for drift tracking.
    `profile` (a data.yaml, a Dataset or a folder of images): the drift profile of its val split (or of the folder's
    images) is computed through the exported model and travels with it (edgekit.drift.profile).

    The weights are copied into a private temp folder and that copy is checked with the restricted unpickler
    (edgekit.checkpoint) before Ultralytics loads it, unless `trust_checkpoint`.
    """
    weights = Path(weights)
    check_outputs(out_dir, export_inputs(weights, parity_images) + _profile_inputs(profile),
                  files=[f"{name}.onnx", f"{name}.json"] + ([f"{name}.drift.npz"] if profile is not None else []))
    if not weights.exists():
        raise ArtifactError(f"{weights}: weights file not found")
    ul = ultralytics()
    onnx = require("onnx", "ONNX export")
    imgsz = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(imgsz)
    with private_tempdir("export") as tmp:
        # Ultralytics writes next to the weights, so it gets a copy; the copy is what was checked and what loads
        local = checked_copy(weights, tmp, trust=trust_checkpoint)
        source_sha = sha256_file(local)  # the bytes that were checked and exported
        try:
            model = ul.YOLO(str(local))
        except Exception as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ArtifactError(f"{weights}: not a loadable Ultralytics checkpoint ({reason})") from None
        if model.task != "detect":
            raise ArtifactError(f"{weights}: task is '{model.task}', edgekit handles detection models only")
        arch, family = arch_of(model)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        m = ul.YOLO(str(local))
        kw = dict(format="onnx", imgsz=list(imgsz), dynamic=dynamic, simplify=simplify, batch=1, verbose=False)
        if opset:
            kw["opset"] = opset
        log(f"exporting {weights.name} ({arch}) to ONNX at {imgsz[0]}x{imgsz[1]}{' dynamic' if dynamic else ''}")
        produced = Path(m.export(**kw))
        onnx_model = onnx.load(str(produced))
        try:
            onnx.checker.check_model(onnx_model)
        except onnx.checker.ValidationError as e:
            raise EdgekitError(f"{produced.name}: onnx.checker rejected the export: {str(e).splitlines()[0]}") from None
        embedding = _with_embedding(onnx_model, model)
        target = out_dir / f"{name}.onnx"
        with atomic_path(target) as t:
            if embedding:
                onnx.save(onnx_model, str(t))
            else:
                shutil.copy2(produced, t)
    graph = onnx_model.graph
    out = graph.output[0]
    out_shape = [d.dim_value or d.dim_param for d in out.type.tensor_type.shape.dim]
    layout = "rtdetr" if family == "rtdetr" else ("end2end" if len(out_shape) == 3 and out_shape[-1] == 6 else "yolo")
    names = [model.names[i] for i in sorted(model.names)]
    stride = int(max(getattr(model.model, "stride", [32]))) if hasattr(model.model, "stride") else 32
    opset_used = next((o.version for o in onnx_model.opset_import if o.domain in ("", "ai.onnx")), None)
    doc = onnx_sidecar(target, arch=arch, family=family, names=names, imgsz=imgsz, stride=stride,
                       input_name=graph.input[0].name, output_name=out.name, layout=layout, output_shape=out_shape,
                       opset=opset_used, dynamic=dynamic, source=weights, source_sha256=source_sha,
                       versions=tool_versions("torch", "ultralytics", "onnx", "onnxslim", "onnxruntime"),
                       **({"embedding": embedding} if embedding else {}))
    write_sidecar(target, doc)
    if parity_images is not False:
        res = parity_check(model, target, parity_images, tol=parity_tol)
        doc["parity"] = res
        write_sidecar(target, doc)
        log(f"parity vs PyTorch on {res['images']} images: max |diff| scores {res['max_abs_diff_scores']:.2e}, "
            f"boxes {res['max_abs_diff_boxes_px']:.2e} px (tolerance {parity_tol:g} on scores)")
        if not res["passed"]:
            raise EdgekitError(f"{target}: ONNX output differs from PyTorch by {res['max_abs_diff_scores']:.3g} "
                               f"(scores), over the tolerance {parity_tol:g}")
    if profile is not None:
        from ..drift.profile import attach_profile

        doc = attach_profile(target, profile, log=log)
    embed_onnx(target, doc)  # the sidecar's content inside the file too (metadata_props)
    log(f"wrote {target} ({doc['size_mb']} MB) and {target.with_suffix('.json').name}")
    return target
