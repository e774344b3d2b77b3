"""LiteRT backend (TFLite: Android, Coral; XNNPACK on CPU): a .tflite model through ai-edge-litert's Interpreter.

The model may take NHWC or NCHW input and float or integer (int8/uint8, with its scale and zero point) tensors: the
backend converts the shared NCHW float blob in and the output back to the raw (1, 4 + nc, N) float tensor.
`precision_executed` is read from the model's tensors: convolutions with int8 outputs -> int8 (full integer);
int8 weights under float activations -> int8+fp32 (dynamic range); else fp32 (fp16 weights are dequantized to fp32
on this CPU; XNNPACK runs fp16 only where the CPU has fp16 arithmetic, which the interpreter does not report).

Build, from the exported ONNX: onnx2tf (TensorFlow) converts it to fp32 and fp16 .tflite in a subprocess with any
download blocked (onnx2tf fetches sample images when none are in its working folder: it gets the calibration
images, or edgekit's demo images); ai-edge-quantizer makes int8-dynamic (int8 weights) and int8 (int8 weights and
activations, calibrated on the calibration set through edgekit's letterbox; the box decode after the last
convolutions stays float, as one int8 scale over pixel boxes and 0..1 scores would erase the scores; the input stays
float, quantized inside the model) from the fp32 model.
Ultralytics' own LiteRT export (litert-torch) loads too: its metadata.json inside the file, its boxes normalized to
the input size scaled back to pixels.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

from ..._imports import require
from ...errors import ArtifactError
from ..devices import parse_device
from .base import Backend

ONNX2TF_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"  # the file onnx2tf would download


def sample_images(calib, n: int = 20, size: int = 128) -> np.ndarray:
    """onnx2tf's test data, (n, size, size, 3) RGB floats in 0..1: the calibration images, else edgekit's demo ones."""
    import cv2

    from ...assets import demo_data
    from ..images import read_image

    paths = list(calib.items) if calib is not None else sorted((Path(demo_data()).parent / "images").rglob("*.jpg"))
    if not paths:
        raise ArtifactError("no images for onnx2tf's conversion check (calibration set and demo images are empty)")
    paths = (paths * n)[:n]
    return np.stack([cv2.resize(read_image(p)[:, :, ::-1], (size, size)).astype(np.float32) / 255 for p in paths])


def run_onnx2tf(source: Path, work: Path, calib, log) -> Path:
    """onnx2tf in a subprocess, its working folder `work`; its output folder (model_float32/16.tflite)."""
    np.save(work / ONNX2TF_SAMPLE, sample_images(calib))
    out = work / "tf"
    env = {**os.environ, "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
           "TF_CPP_MIN_LOG_LEVEL": "3"}  # nothing is downloaded at build time: a request fails at once
    cmd = [sys.executable, "-m", "onnx2tf", "-i", str(source), "-o", str(out), "-n", "-coion"]
    res = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    if res.returncode != 0 or not (out / f"{source.stem}_float32.tflite").is_file():
        lines = [ln for ln in (res.stderr + res.stdout).strip().splitlines() if "Error" in ln or "error" in ln]
        raise ArtifactError(f"{source.name}: onnx2tf failed to convert it (exit {res.returncode}): "
                            f"{(lines or ['no output'])[-1][:300]}")
    return out


def quantize(fp32: Path, precision: str, target: Path, calib) -> None:
    """ai-edge-quantizer: int8-dynamic (int8 weights) or int8 (static, calibrated) from the fp32 .tflite."""
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
        _quantize(fp32, precision, target, calib)  # its progress bars and size report: not edgekit's output


def _quantize(fp32: Path, precision: str, target: Path, calib) -> None:
    aq = require("ai_edge_quantizer", "LiteRT INT8 builds")
    from ai_edge_quantizer import qtyping, recipe

    q = aq.quantizer.Quantizer(str(fp32))
    if precision == "int8-dynamic":
        q.load_quantization_recipe(recipe.dynamic_wi8_afp32())
        result = q.quantize()
    else:
        interp = require("ai_edge_litert.interpreter", "the LiteRT backend").Interpreter(model_path=str(fp32))
        tail = decode_tail(interp)  # an op's scope is its output names, each followed by ";"
        keep_float = [{"regex": "^(?:" + "|".join(re.escape(n) for n in tail) + ");$", "operation": "*",
                       "algorithm_key": "no_quantize", "op_config": {}}] if tail else []
        q.load_quantization_recipe(recipe.static_wi8_ai8() + keep_float)
        # a float input: the model quantizes it (one fused op) where numpy would take 3 to 4 ms per 640 image
        q.update_quantization_recipe(regex=".*", operation_name=qtyping.TFLOperationName.INPUT,
                                     algorithm_key=recipe.AlgorithmName.NO_QUANTIZE)
        sig = next(iter(interp.get_signature_list().items()))
        name, (inp,) = sig[0], sig[1]["inputs"]
        nhwc = interp.get_input_details()[0]["shape"][-1] == 3
        data = [{inp: b.transpose(0, 2, 3, 1) if nhwc else b} for b in calib.batches(1)]
        result = q.quantize(q.calibrate({name: data}))
    result.export_model(str(target), overwrite=True)


def decode_tail(interp) -> list[str]:
    """Output tensor names of the ops between the last convolutions and the model's output (the box decode and the
    concat of pixel boxes with 0..1 scores): kept float in an int8 model, as one int8 scale would erase the scores."""
    ops = ops_details(interp)
    names = {t["index"]: t["name"] for t in interp.get_tensor_details()}
    producer = {o: op for op in ops for o in op["outputs"]}
    todo, seen, tail = [d["index"] for d in interp.get_output_details()], set(), []
    while todo:
        t = todo.pop()
        op = producer.get(t)
        if op is None or op["index"] in seen or "CONV" in str(op["op_name"]).upper():
            continue
        seen.add(op["index"])
        tail += [names[o] for o in op["outputs"] if o in names]
        todo += [i for i in op["inputs"] if i >= 0]
    return tail


def ops_details(interp) -> list[dict]:
    """The interpreter's op list (op_name, inputs, outputs); [] where this version does not give it."""
    try:
        return list(interp._get_ops_details())
    except Exception:  # a private API: without it, the tensor dtypes alone decide
        return []


def executed(interp) -> str:
    """int8 (convolutions output int8), int8+fp32 (int8 conv weights, float activations), else fp32."""
    tensors = {t["index"]: np.dtype(t["dtype"]) for t in interp.get_tensor_details()}
    convs = [op for op in ops_details(interp) if "CONV" in str(op.get("op_name", "")).upper()]
    ints = (np.dtype(np.int8), np.dtype(np.uint8))
    if convs:
        if all(tensors.get(op["outputs"][0]) in ints for op in convs):
            return "int8"
        if any(len(op["inputs"]) > 1 and tensors.get(op["inputs"][1]) in ints for op in convs):
            return "int8+fp32"
        return "fp32"
    kinds = set(tensors.values())
    return "int8" if np.dtype(interp.get_input_details()[0]["dtype"]) in ints else (
        "int8+fp32" if kinds & set(ints) else "fp32")


def box_scale(meta) -> np.ndarray | None:
    """Ultralytics' LiteRT exports (read through its metadata: metadata.json inside, or metadata.yaml beside) give
    xywh divided by the input size (so that one INT8 scale keeps the scores): the factors back to pixels, as its own
    LiteRT backend applies; None for edgekit's artifacts (pixel boxes, a sidecar)."""
    if meta is None or "ultralytics" not in meta.raw or "format" in meta.raw or meta.layout != "yolo":  # a sidecar
        return None
    h, w = meta.imgsz
    return np.array([w, h, w, h], np.float32).reshape(1, 4, 1)


class LiteRTBackend(Backend):
    name = "litert"
    suffixes = (".tflite",)
    module, extra = "ai_edge_litert", "litert"
    device_kinds = ("cpu",)
    executes = ("fp32", "int8")
    builds = ("fp32", "fp16", "int8-dynamic", "int8")
    build_modules = ("onnx2tf", "tensorflow", "ai_edge_quantizer")
    build_extra = "litert-build"
    calibrated = ("int8",)

    @classmethod
    def offers(cls, target: str, explicit: bool = False) -> tuple[str, ...]:
        """fp32, int8-dynamic and int8 (calibrated) on the CPU; fp16 (fp16 weights, fp32 here) when asked for."""
        if not cls.runs_on(target):
            return ()
        return ("fp32", "int8-dynamic", "int8") + (("fp16",) if explicit else ())

    @classmethod
    def runner(cls, device: str):
        from ..concurrency import SplitThreadsRunner

        return SplitThreadsRunner

    @classmethod
    def build_impl(cls, source: Path, precision: str, folder: Path, meta, calib=None, log=print, work=None,
                   **opts) -> tuple[Path, dict]:
        work = Path(work)
        tf = run_onnx2tf(source, work, calib, log)
        model = folder / "model.tflite"
        facts = {"litert": {"converter": "onnx2tf"}}
        if precision in ("fp32", "fp16"):
            shutil.copy2(tf / f"{source.stem}_float{precision[2:]}.tflite", model)
        else:
            quantize(tf / f"{source.stem}_float32.tflite", precision, model, calib)
            facts["litert"]["quantizer"] = "ai-edge-quantizer " + ("dynamic_wi8_afp32" if precision == "int8-dynamic"
                                                                   else "static_wi8_ai8")
        interp = require("ai_edge_litert.interpreter", "the LiteRT backend").Interpreter(model_path=str(model))
        inp = interp.get_input_details()[0]
        facts["input"] = {"name": inp["name"], "layout": "NHWC" if inp["shape"][-1] == 3 else "NCHW",
                          "dtype": np.dtype(inp["dtype"]).name}
        return model, facts

    def load_impl(self) -> None:
        lite = require("ai_edge_litert.interpreter", "the LiteRT backend")
        if parse_device(self.device)[0] != "cpu":
            raise ArtifactError(f"device '{self.device}' is not supported by the litert backend (use cpu)")
        threads = int(self.options["threads"]) if self.options.get("threads") else None
        try:
            self.interp = lite.Interpreter(model_path=str(self.path), num_threads=threads)
            self.interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ArtifactError(f"{self.path}: LiteRT cannot load this model: {str(e).splitlines()[0]}") from None
        self.inp, self.out = self.interp.get_input_details()[0], self.interp.get_output_details()[0]
        shape = [int(d) for d in self.inp["shape"]]
        self.nhwc = len(shape) == 4 and shape[-1] == 3 and shape[1] != 3
        if self.meta is not None:
            from ..meta import check_io

            nchw = [shape[0], shape[3], shape[1], shape[2]] if self.nhwc else shape
            check_io(self.path, self.meta, nchw, [int(d) for d in self.out["shape"]])
        self._batch = shape[0]
        self.scale = box_scale(self.meta)
        self.lock = threading.Lock()  # an interpreter runs one call at a time
        self._executed = executed(self.interp)

    def infer_impl(self, blob: np.ndarray) -> np.ndarray:
        x = blob.transpose(0, 2, 3, 1) if self.nhwc else blob
        dtype = np.dtype(self.inp["dtype"])
        if dtype.kind in "iu":
            scale, zero = self.inp["quantization"]
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        with self.lock:
            self.interp.set_tensor(self.inp["index"], np.ascontiguousarray(x, dtype))
            self.interp.invoke()
            y = self.interp.get_tensor(self.out["index"])
        if np.dtype(y.dtype).kind in "iu":
            scale, zero = self.out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        y = y.astype(np.float32, copy=False)
        if self.scale is not None:
            y[:, :4] *= self.scale
        return y

    @property
    def precision_executed(self) -> str:
        return self._executed

    def close_impl(self) -> None:
        del self.interp
