"""Write a Triton model repository for an artifact: the model, Python-backend pre/post models, and an ensemble.

DIR/
  NAME_model/  config.pbtxt, 1/model.onnx | 1/model.xml + model.bin | 1/model.plan
  NAME_pre/    config.pbtxt, 1/model.py, 1/edgekit_meta.json, 1/edgekit_runtime/  (header checks, letterbox)
  NAME_post/   the same files, stage "post"  (decode + NMS, boxes in original-image pixels)
  NAME/        config.pbtxt (ensemble: IMAGE -> BOXES, SCORES, LABELS), 1/, README.md

The repository may hold other models: only these four folders are written, each with a MARKER file saying edgekit
wrote it. A folder of that name without the marker is someone else's and is replaced only with force=True. Each
folder is built in a hidden staging folder inside the repository, then renamed into place (one folder at a time).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..errors import ArtifactError, EdgekitError

PLATFORMS = {"onnxruntime": ("onnxruntime", "model.onnx"), "openvino": ("openvino", "model.xml"),
             "tensorrt": ("tensorrt", "model.plan")}
TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16"}
# copied beside model.py as edgekit_runtime/{errors.py, runtime/...}: the layout of edgekit itself, so that their
# imports (images.py's `..errors`) resolve the same way
RUNTIME_FILES = ("preprocess.py", "postprocess.py", "detections.py", "images.py")
MARKER = ".edgekit-deploy.json"  # in every model folder edgekit writes: what makes a folder ours to replace
SUFFIX_BACKEND = {".onnx": "onnxruntime", ".xml": "openvino", ".engine": "tensorrt", ".plan": "tensorrt"}


@dataclass
class NetIO:
    """The network's tensor names, dtype and shapes without the batch dimension."""

    input_name: str
    output_name: str
    input_dims: list[int]
    output_dims: list[int]
    dtype: str  # float32 | float16
    batch: int | None  # None: dynamic


def net_io(artifact: Path, backend: str, meta) -> NetIO:
    """Read tensor names and shapes from the model itself (ONNX, IR) or from the sidecar (TensorRT)."""
    if backend == "onnxruntime":
        from .._imports import available, require

        if not available("onnx") and available("openvino"):  # OpenVINO reads ONNX too: no need for onnx here
            return net_io(artifact, "openvino", meta)
        onnx = require("onnx", "reading an ONNX model's inputs and outputs for a Triton repository")
        g = onnx.load(str(artifact), load_external_data=False).graph
        dims = lambda v: [d.dim_value if d.dim_value > 0 else -1 for d in v.type.tensor_type.shape.dim]  # noqa: E731
        i, o = g.input[0], g.output[0]
        dtype = "float16" if i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16 else "float32"
        di, do = dims(i), dims(o)
        return NetIO(i.name, o.name, di[1:], do[1:], dtype, di[0] if di[0] > 0 else None)
    if backend == "openvino":
        from .._imports import require

        ov = require("openvino", "writing a Triton repository")
        m = ov.Core().read_model(str(artifact))
        ps = [m.inputs[0].get_partial_shape(), m.outputs[0].get_partial_shape()]
        di, do = ([d.get_length() if d.is_static else -1 for d in s] for s in ps)
        dtype = "float16" if m.inputs[0].get_element_type().get_type_name() == "f16" else "float32"
        return NetIO(m.inputs[0].get_any_name(), m.outputs[0].get_any_name(), di[1:], do[1:], dtype,
                     di[0] if di[0] > 0 else None)
    doc = meta.raw
    try:
        shape = [int(s) if str(s).isdigit() else -1 for s in doc["output"]["shape"]]
        return NetIO(doc["input"]["name"], doc["output"]["name"], [3, *meta.imgsz], shape[1:],
                     doc["input"].get("dtype", "float32"), meta.batch)
    except (KeyError, TypeError) as e:
        raise ArtifactError(f"{artifact}: the sidecar lacks the tensor names and shapes Triton needs ({e})") from None


def _dims(d) -> str:
    return "[ " + ", ".join(str(int(x)) for x in d) + " ]"


def _tensor(name: str, dtype: str, dims) -> str:
    return f'  {{ name: "{name}" data_type: {dtype} dims: {_dims(dims)} }}'


def _block(key: str, tensors: list[str]) -> str:
    return f"{key} [\n" + ",\n".join(tensors) + "\n]\n"


def _batching(max_batch: int, delay_us: int) -> str:
    return f"dynamic_batching {{ max_queue_delay_microseconds: {delay_us} }}\n" if max_batch > 1 else ""


def model_config(name, backend, io: NetIO, max_batch, instances, delay_us) -> str:
    kind = "KIND_GPU" if backend == "tensorrt" else "KIND_CPU"
    plat, fname = PLATFORMS[backend]
    return (f'name: "{name}"\n' + ('platform: "tensorrt_plan"\n' if backend == "tensorrt" else f'backend: "{plat}"\n')
            + f'default_model_filename: "{fname}"\nmax_batch_size: {max_batch}\n'
            + _block("input", [_tensor(io.input_name, TYPES[io.dtype], io.input_dims)])
            + _block("output", [_tensor(io.output_name, "TYPE_FP32", io.output_dims)])
            + f"instance_group [ {{ count: {instances} kind: {kind} }} ]\n" + _batching(max_batch, delay_us))


def python_config(name, stage, io: NetIO, max_batch, instances, delay_us) -> str:
    if stage == "pre":
        ins = [_tensor("IMAGE", "TYPE_STRING", [1])]
        outs = [_tensor("images", TYPES[io.dtype], io.input_dims), _tensor("LETTERBOX", "TYPE_FP64", [5])]
    else:
        ins = [_tensor("RAW", "TYPE_FP32", io.output_dims), _tensor("LETTERBOX", "TYPE_FP64", [5])]
        outs = [_tensor("BOXES", "TYPE_FP32", [-1, 4]), _tensor("SCORES", "TYPE_FP32", [-1]),
                _tensor("LABELS", "TYPE_INT64", [-1])]
    return (f'name: "{name}"\nbackend: "python"\nmax_batch_size: {max_batch}\n' + _block("input", ins)
            + _block("output", outs) + f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]\n"
            + _batching(max_batch, delay_us) + f'parameters: {{ key: "stage" value: {{ string_value: "{stage}" }} }}\n')


def ensemble_config(name, io: NetIO, max_batch) -> str:
    def step(model, ins: dict, outs: dict) -> str:
        maps = "".join(f' input_map {{ key: "{k}" value: "{v}" }}' for k, v in ins.items())
        maps += "".join(f' output_map {{ key: "{k}" value: "{v}" }}' for k, v in outs.items())
        return f'    {{ model_name: "{model}" model_version: -1{maps} }}'

    steps = [step(f"{name}_pre", {"IMAGE": "IMAGE"}, {"images": "preprocessed", "LETTERBOX": "letterbox"}),
             step(f"{name}_model", {io.input_name: "preprocessed"}, {io.output_name: "raw"}),
             step(f"{name}_post", {"RAW": "raw", "LETTERBOX": "letterbox"},
                  {"BOXES": "BOXES", "SCORES": "SCORES", "LABELS": "LABELS"})]
    return (f'name: "{name}"\nplatform: "ensemble"\nmax_batch_size: {max_batch}\n'
            + _block("input", [_tensor("IMAGE", "TYPE_STRING", [1])])
            + _block("output", [_tensor("BOXES", "TYPE_FP32", [-1, 4]), _tensor("SCORES", "TYPE_FP32", [-1]),
                                _tensor("LABELS", "TYPE_INT64", [-1])])
            + "ensemble_scheduling {\n  step [\n" + ",\n".join(steps) + "\n  ]\n}\n")


def _copy_model(artifact: Path, backend: str, dst: Path) -> None:
    dst.mkdir(parents=True)
    if backend == "openvino":
        shutil.copy2(artifact, dst / "model.xml")
        shutil.copy2(artifact.with_suffix(".bin"), dst / "model.bin")
    else:
        shutil.copy2(artifact, dst / PLATFORMS[backend][1])


def _python_model(folder: Path, stage: str, meta_doc: dict) -> None:
    from .. import errors
    from ..runtime import detections  # noqa: F401  (the package whose files are copied)

    ver = folder / "1"
    pkg = ver / "edgekit_runtime"
    (pkg / "runtime").mkdir(parents=True)
    shutil.copy2(Path(__file__).with_name("triton_model.py"), ver / "model.py")
    (pkg / "__init__.py").write_text('"""edgekit\'s image checks and pre/post-processing, copied."""\n')
    shutil.copy2(errors.__file__, pkg / "errors.py")
    runtime = Path(detections.__file__).parent
    for f in RUNTIME_FILES:
        shutil.copy2(runtime / f, pkg / "runtime" / f)
    (pkg / "runtime" / "__init__.py").write_text('"""edgekit.runtime files, copied."""\n')
    (ver / "edgekit_meta.json").write_text(json.dumps(meta_doc, indent=2) + "\n")


def _ours(folder: Path) -> bool:
    """True when edgekit deploy wrote this model folder (its marker file says so)."""
    try:
        return json.loads((folder / MARKER).read_text()).get("written_by") == "edgekit deploy"
    except (OSError, ValueError, AttributeError):
        return False


def _deploy_backend(src: Path, backend: str | None) -> str:
    """The Triton backend for an artifact: named, else from its file type (what Triton runs, not what is here)."""
    if backend:
        return backend
    if src.is_dir():
        return "openvino"
    if src.suffix.lower() in SUFFIX_BACKEND:
        return SUFFIX_BACKEND[src.suffix.lower()]
    from ..runtime.backends import pick_backend

    return pick_backend(src)  # an unknown suffix: its error names the known ones


def _write_folder(staging: Path, folder: str, fill) -> Path:
    """Build one model folder under staging with fill(path), then its marker."""
    f = staging / folder
    f.mkdir()
    fill(f)
    (f / MARKER).write_text(json.dumps({"written_by": "edgekit deploy", "edgekit": __version__}) + "\n")
    return f


def _swap_in(new: Path, dst: Path, staging: Path) -> None:
    """Rename new over dst (the old one moved aside into staging first, then deleted with it)."""
    if dst.exists() or dst.is_symlink():
        os.replace(dst, staging / f".old-{dst.name}")
    os.replace(new, dst)


def write_triton_repo(artifact, out_dir, name: str | None = None, backend: str | None = None,
                      max_batch: int = 8, instances: int = 1, delay_us: int = 2000, conf: float = 0.25,
                      iou: float = 0.7, max_det: int = 300, force: bool = False) -> Path:
    """artifact -> its four model folders in the Triton repository out_dir (other models kept); returns out_dir.

    EdgekitError, before anything is written, when one of the four folders exists and is not edgekit's (unless
    force).
    """
    from ..runtime.meta import find_model_file, load_meta
    from .server import model_name

    src = Path(artifact)
    meta = load_meta(src)  # the same metadata Engine would use: refuses an artifact without it
    backend = _deploy_backend(src, backend)
    if backend not in PLATFORMS:
        raise ArtifactError(f"{src}: Triton has no backend for edgekit's '{backend}' artifacts "
                            f"(use .onnx, an OpenVINO IR or a TensorRT .engine)")
    model_file = find_model_file(src) if src.is_dir() else src
    if backend == "onnxruntime" and model_file.suffix.lower() != ".onnx":
        raise ArtifactError(f"{model_file}: the onnxruntime backend needs an .onnx file")
    name = name or model_name(src)
    repo = Path(out_dir)
    if repo.exists() and not repo.is_dir():
        raise EdgekitError(f"{repo}: not a folder (a Triton model repository is a folder of model folders)")
    folders = [f"{name}_model", f"{name}_pre", f"{name}_post", name]
    foreign = [f for f in folders if ((repo / f).exists() or (repo / f).is_symlink()) and not _ours(repo / f)]
    if foreign and not force:
        them = "it" if len(foreign) == 1 else "them"
        raise EdgekitError(f"{repo}: {', '.join(foreign)} already in the repository and not written by edgekit "
                           f"deploy; nothing was changed (pass --force to replace {them})")
    io = net_io(model_file, backend, meta)
    if io.batch not in (None, 1):
        raise ArtifactError(f"{model_file}: fixed batch {io.batch}; Triton batching needs batch 1 or a dynamic "
                            f"batch (edgekit export --dynamic)")
    if -1 in io.input_dims:
        io.input_dims = [3, *meta.imgsz]  # dynamic image size: edgekit letterboxes to the sidecar's imgsz
    mb = max_batch if io.batch is None else 1
    meta_doc = {"names": meta.names, "imgsz": list(meta.imgsz), "pad_value": meta.pad_value, "layout": meta.layout,
                "input_dtype": io.dtype, "conf": conf, "iou": iou, "max_det": max_det}

    def model(f: Path) -> None:
        _copy_model(model_file, backend, f / "1")
        (f / "config.pbtxt").write_text(model_config(f.name, backend, io, mb, instances, delay_us))

    def python(stage: str):
        def fill(f: Path) -> None:
            _python_model(f, stage, meta_doc)
            (f / "config.pbtxt").write_text(python_config(f.name, stage, io, mb, instances, delay_us))
        return fill

    def ensemble(f: Path) -> None:
        (f / "1").mkdir()
        (f / "config.pbtxt").write_text(ensemble_config(name, io, mb))
        (f / "README.md").write_text(readme(name, repo))

    repo.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".edgekit-deploy.", dir=repo))
    try:
        built = [_write_folder(staging, f, fill) for f, fill in
                 zip(folders, (model, python("pre"), python("post"), ensemble))]
        for f in built:  # the ensemble last: its steps exist when it appears
            _swap_in(f, repo / f.name, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return repo


def readme(name: str, out_dir) -> str:
    return f"""# Triton model repository for `{name}` (written by edgekit)

Send encoded images (BYTES) as `IMAGE`, shape `[n, 1]` (`[1, 1]` for one image: the models batch, so the first
dimension is the batch), to the ensemble `{name}`; it returns `BOXES` `[n, k, 4]` (x1 y1 x2 y2 in original-image
pixels), `SCORES` `[n, k]` and `LABELS` `[n, k]` (class ids, -1 pads; names in `{name}_pre/1/edgekit_meta.json`).
Each of the four folders `{name}`, `{name}_model`, `{name}_pre`, `{name}_post` holds `{MARKER}`: `edgekit deploy`
replaces only folders that carry it, and leaves the repository's other models alone.
The Python-backend models need OpenCV in the server's Python (`pip install opencv-python-headless`).

    docker run --rm -p 8000:8000 -p 8001:8001 -p 8002:8002 -v "$PWD/{Path(out_dir).name}:/models" \\
      nvcr.io/nvidia/tritonserver:24.08-py3 \\
      bash -c "pip install -q opencv-python-headless && tritonserver --model-repository=/models"
"""
