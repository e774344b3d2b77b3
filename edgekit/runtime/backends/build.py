"""Backend.build(): one exported FP32 ONNX (or its checkpoint) -> one backend's artifact, atomically, with a sidecar.

What is common to every backend's build lives here (checks, private copies, the atomic folder, the sidecar, the
output check); what a format needs is the backend's `build_impl`.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from pathlib import Path

import numpy as np

from ..._imports import available, install_hint, tool_versions
from ...errors import ArtifactError, MissingDependency
from ...io import atomic_dir, private_tempdir, sha256_file
from ..meta import from_sidecar, load_meta, read_sidecar, sidecar_path, write_sidecar


def check_out_dir(out_dir: Path, onnx_path: Path, backend: str) -> None:
    """Refuse an output folder that holds the input, or files that are not an earlier build of this backend."""
    out, src = out_dir.resolve(), onnx_path.resolve()
    if out == src.parent or out in src.parents:
        raise ArtifactError(f"{out_dir}: the output folder holds the input {onnx_path.name}; choose another folder")
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ArtifactError(f"{out_dir}: exists and is not a folder")
    files = [p for p in out_dir.iterdir()]
    sidecars = [p for p in files if p.suffix == ".json"]
    ours = bool(sidecars) and all(_built_by(p) == backend for p in sidecars)
    if files and not ours:
        raise ArtifactError(f"{out_dir}: the folder exists and is not an earlier {backend} build by edgekit; "
                            f"choose another output folder")


def _built_by(sidecar: Path) -> str | None:
    try:
        doc = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    return doc.get("backend") if isinstance(doc, dict) else None


def checked_checkpoint(checkpoint, onnx_doc: dict, work: Path, trust: bool = False) -> tuple[Path, str]:
    """A checked private copy of the checkpoint the ONNX was exported from, and its sha256 (must match the record)."""
    from ...checkpoint import checked_copy

    recorded = onnx_doc.get("source") or {}
    path = Path(checkpoint or recorded.get("path") or "")
    if not path.is_file():
        raise ArtifactError(f"{path or 'checkpoint'}: checkpoint not found (this build reads the .pt the ONNX was "
                            f"exported from; pass checkpoint=...)")
    local = checked_copy(path, work, trust=trust)
    sha = sha256_file(local)
    if recorded.get("sha256") and sha != recorded["sha256"]:
        raise ArtifactError(f"{path}: this checkpoint is not the one the ONNX was exported from (sha256 {sha[:12]} "
                            f"!= {recorded['sha256'][:12]} in the ONNX's sidecar)")
    return local, sha


def check_output(cls, model: Path, onnx_doc: dict, device: str = "cpu") -> None:
    """Load the built artifact and run one blank image: its output must have the ONNX's shape."""
    meta = load_meta(model)
    b = cls(model, device if not cls.runs_on("cpu") else "cpu", meta).load()
    try:
        out = b.infer(np.zeros((1, 3, *meta.imgsz), np.float32))
    finally:
        b.close()
    want = list((onnx_doc.get("output") or {}).get("shape", []))
    if len(want) != out.ndim or any(isinstance(w, int) and w > 0 and w != o for w, o in zip(want[1:], out.shape[1:])):
        raise ArtifactError(f"{model}: the built {cls.name} model outputs shape {tuple(out.shape)}, the ONNX "
                            f"{tuple(want)}: the conversion changed the model's output")


def build_artifact(cls, onnx_path, precision: str, out_dir, calib, checkpoint, log, **opts) -> Path:
    """See Backend.build."""
    onnx_path = Path(os.path.abspath(onnx_path))  # converters run in their own working folder
    if precision not in cls.builds:
        raise ArtifactError(f"the {cls.name} backend builds {', '.join(cls.builds) or 'no artifacts'}, "
                            f"not {precision}")
    if precision in cls.calibrated and calib is None:
        raise ArtifactError(f"{cls.name} {precision}: the build needs a calibration set (images of the train split)")
    if not onnx_path.is_file():
        raise ArtifactError(f"{onnx_path}: exported ONNX not found")
    doc = read_sidecar(onnx_path)
    if not doc:
        raise ArtifactError(f"{onnx_path}: no sidecar {sidecar_path(onnx_path).name} beside it "
                            f"(export the model with 'edgekit export')")
    meta = from_sidecar(doc, sidecar_path(onnx_path))
    missing = [m for m in (cls.module, *cls.build_modules) if m and not available(m)]
    if missing:  # checked, not imported: a converter may run in a child process only (TensorFlow and torch's
        # compiler stack crash when imported into one process)
        raise MissingDependency(f"building {cls.name} artifacts needs {', '.join(missing)}: "
                                f"{install_hint(missing[0], cls.build_extra)}")
    out_dir = Path(os.path.abspath(out_dir)) if out_dir else onnx_path.parent / f"{cls.name}_{precision}"
    check_out_dir(out_dir, onnx_path, cls.name)
    device = opts.pop("device", "cpu")  # the target: where a backend that does not run on the CPU builds and checks
    log(f"building {cls.name} {precision} from {onnx_path.name if cls.build_from == 'onnx' else 'the checkpoint'}")
    with private_tempdir("build") as work:
        work = Path(work)
        if cls.build_from == "onnx":
            source = work / onnx_path.name  # converters write beside their input: they get a private copy
            shutil.copy2(onnx_path, source)
            source_sha = sha256_file(source)  # the ONNX as given, the one its sidecar names
            if not cls.carries_embedding:  # its converter keeps one output, the detection one: drift tracking
                from ..embedding import strip_embedding  # falls back to image statistics and confidences

                strip_embedding(source)
        else:
            source, source_sha = checked_checkpoint(checkpoint, doc, work, bool(opts.pop("trust_checkpoint", False)))
        with atomic_dir(out_dir) as tmp:
            tmp = Path(tmp)
            model, facts = cls.build_impl(source, precision, tmp, meta, calib=calib, log=log, work=work,
                                          device=device, **opts)
            if calib is not None and precision in cls.calibrated:
                facts["calibration"] = calib.manifest()
            size = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file() and p.suffix != ".json")
            side = artifact_sidecar(doc, backend=cls.name, precision=precision, build_from=cls.build_from,
                                    source=onnx_path if cls.build_from == "onnx" else Path(checkpoint or source),
                                    source_sha256=source_sha, size_bytes=size,
                                    versions=tool_versions(*(m for m in (cls.module, *cls.build_modules) if m)),
                                    **facts)
            write_sidecar(model, side)
            check_output(cls, model, doc, device)
            name = model.relative_to(tmp)
    log(f"wrote {out_dir / name} ({side['size_mb']} MB)")
    return out_dir / name


# what an artifact built from the ONNX keeps of its sidecar: the model's facts, not the ONNX file's
KEPT = ("task", "arch", "family", "names", "nc", "imgsz", "stride", "letterbox", "input", "output")


def artifact_sidecar(onnx_doc: dict, *, backend: str, precision: str, build_from: str, source: Path,
                     source_sha256: str, size_bytes: int, versions: dict, **facts) -> dict:
    """The sidecar of an artifact another backend built from an exported ONNX (or the checkpoint behind it).

    The ONNX's model facts (names, imgsz, letterbox, output layout), batch 1, and what this build made: backend,
    precision, source and its sha256 (and the checkpoint the ONNX came from), tool versions; `facts` are the
    backend's own (input/output names merge into those sections).
    """
    doc = {k: onnx_doc[k] for k in KEPT if k in onnx_doc}
    doc["input"] = {**doc.get("input", {}), "batch": 1, **facts.pop("input", {})}
    doc["output"] = {**doc.get("output", {}), **facts.pop("output", {})}
    doc.update({
        "precision": precision,
        "backend": backend,
        "source": {"path": str(Path(source).resolve()), "sha256": source_sha256, "kind": build_from,
                   "exported_from": onnx_doc.get("source")},
        "versions": versions,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **facts,
        "size_mb": round(size_bytes / 1e6, 3),
    })
    return doc
