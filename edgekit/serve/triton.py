"""Write a Triton model repository for an artifact: the model, Python-backend pre/post models, and an ensemble.

DIR/
  NAME_model/  config.pbtxt, 1/model.onnx | 1/model.xml + model.bin | 1/model.plan
  NAME_pre/    config.pbtxt, 1/model.py, 1/edgekit_meta.json, 1/edgekit_runtime/  (letterbox)
  NAME_post/   the same files, stage "post"  (decode + NMS, boxes in original-image pixels)
  NAME/        config.pbtxt (ensemble: IMAGE -> BOXES, SCORES, LABELS), 1/
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import ArtifactError
from ..io import atomic_dir

PLATFORMS = {"onnxruntime": ("onnxruntime", "model.onnx"), "openvino": ("openvino", "model.xml"),
             "tensorrt": ("tensorrt", "model.plan")}
TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16"}
RUNTIME_FILES = ("__init__.py", "preprocess.py", "postprocess.py", "detections.py")


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
        from .._imports import require

        onnx = require("onnx", "writing a Triton repository")
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
    return (f'name: "{name}"\n' + (f'platform: "tensorrt_plan"\n' if backend == "tensorrt" else f'backend: "{plat}"\n')
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
    from ..runtime import detections  # noqa: F401  (the package whose files are copied)

    ver = folder / "1"
    (ver / "edgekit_runtime").mkdir(parents=True)
    shutil.copy2(Path(__file__).with_name("triton_model.py"), ver / "model.py")
    runtime = Path(detections.__file__).parent
    for f in RUNTIME_FILES[1:]:
        shutil.copy2(runtime / f, ver / "edgekit_runtime" / f)
    (ver / "edgekit_runtime" / "__init__.py").write_text('"""edgekit.runtime pre/post-processing, copied."""\n')
    (ver / "edgekit_meta.json").write_text(json.dumps(meta_doc, indent=2) + "\n")


def write_triton_repo(artifact, out_dir, name: str | None = None, backend: str | None = None,
                      max_batch: int = 8, instances: int = 1, delay_us: int = 2000, conf: float = 0.25,
                      iou: float = 0.7, max_det: int = 300) -> Path:
    """artifact -> a Triton model repository at out_dir (replaced atomically); returns out_dir."""
    from ..runtime.backends import pick_backend
    from ..runtime.meta import find_model_file, load_meta
    from .server import model_name

    src = Path(artifact)
    meta = load_meta(src)  # the same metadata Engine would use: refuses an artifact without it
    backend = backend or pick_backend(src)
    if backend not in PLATFORMS:
        raise ArtifactError(f"{src}: Triton has no backend for edgekit's '{backend}' artifacts "
                            f"(use .onnx, an OpenVINO IR or a TensorRT .engine)")
    model_file = find_model_file(src) if src.is_dir() else src
    if backend == "onnxruntime" and model_file.suffix.lower() != ".onnx":
        raise ArtifactError(f"{model_file}: the onnxruntime backend needs an .onnx file")
    name = name or model_name(src)
    io = net_io(model_file, backend, meta)
    if io.batch not in (None, 1):
        raise ArtifactError(f"{model_file}: fixed batch {io.batch}; Triton batching needs batch 1 or a dynamic "
                            f"batch (edgekit export --dynamic)")
    if -1 in io.input_dims:
        io.input_dims = [3, *meta.imgsz]  # dynamic image size: edgekit letterboxes to the sidecar's imgsz
    mb = max_batch if io.batch is None else 1
    meta_doc = {"names": meta.names, "imgsz": list(meta.imgsz), "pad_value": meta.pad_value, "layout": meta.layout,
                "input_dtype": io.dtype, "conf": conf, "iou": iou, "max_det": max_det}
    with atomic_dir(out_dir) as tmp:
        m = tmp / f"{name}_model"
        _copy_model(model_file, backend, m / "1")
        (m / "config.pbtxt").write_text(model_config(f"{name}_model", backend, io, mb, instances, delay_us))
        for stage in ("pre", "post"):
            p = tmp / f"{name}_{stage}"
            _python_model(p, stage, meta_doc)
            (p / "config.pbtxt").write_text(python_config(f"{name}_{stage}", stage, io, mb, instances, delay_us))
        (tmp / name / "1").mkdir(parents=True)
        (tmp / name / "config.pbtxt").write_text(ensemble_config(name, io, mb))
        (tmp / "README.md").write_text(readme(name, out_dir))
    return Path(out_dir)


def readme(name: str, out_dir) -> str:
    return f"""# Triton model repository for `{name}` (written by edgekit)

Send one encoded image (BYTES) as `IMAGE` to the ensemble `{name}`; it returns `BOXES` (x1 y1 x2 y2 in
original-image pixels), `SCORES` and `LABELS` (class ids; names in `{name}_pre/1/edgekit_meta.json`).
The Python-backend models need OpenCV in the server's Python (`pip install opencv-python-headless`).

    docker run --rm -p 8000:8000 -p 8001:8001 -p 8002:8002 -v "$PWD/{Path(out_dir).name}:/models" \\
      nvcr.io/nvidia/tritonserver:24.08-py3 \\
      bash -c "pip install -q opencv-python-headless && tritonserver --model-repository=/models"
"""
