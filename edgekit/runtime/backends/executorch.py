"""ExecuTorch backend (phones: XNNPACK on CPU): a .pte program through executorch.runtime, tensors through torch.

Build, from the checkpoint the ONNX was exported from (ExecuTorch lowers a torch.export graph, not an ONNX):
the Ultralytics model, fused, its Detect head in export mode (the raw (1, 4 + nc, N) output the ONNX gives), exported
at the ONNX's imgsz and lowered to XNNPACK; int8 is PT2E quantization (XNNPACKQuantizer, symmetric per-channel
weights, int8 activations; the head's decode stays float) calibrated on the calibration set through edgekit's
letterbox.

Precision: the program does not say what its XNNPACK delegate runs; the sidecar's precision does (int8 -> int8 with
the ops XNNPACK leaves unquantized in fp32). One program runs one call at a time: calls are serialized.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path

import numpy as np

from ..._imports import require
from ...errors import ArtifactError
from ..devices import parse_device
from .base import Backend

DETECT = ("Detect", "v10Detect", "YOLOEDetect")  # Ultralytics' detection heads


def export_module(checkpoint: Path, imgsz):
    """The fused Ultralytics model whose forward returns the raw (1, 4 + nc, N) tensor, and an example input."""
    from ..._ultralytics import ultralytics

    torch = require("torch", "ExecuTorch builds")
    try:
        net = ultralytics().YOLO(str(checkpoint)).model
    except Exception as e:
        raise ArtifactError(f"{checkpoint.name}: not a loadable Ultralytics checkpoint ({type(e).__name__})") from None
    net = net.fuse(verbose=False) if hasattr(net, "fuse") else net
    net = net.float().eval()
    for m in net.modules():
        if type(m).__name__ in DETECT:
            m.export, m.format, m.dynamic = True, "executorch", False
    return net, torch.zeros(1, 3, *imgsz)


def lower(program, path: Path) -> None:
    """torch.export program -> XNNPACK-delegated .pte at `path`."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    et = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
    path.write_bytes(et.buffer)


def int8_quantizer(net):
    """XNNPACK's symmetric per-channel int8 config everywhere but the head's decode: in the Detect module only the
    conv branches (cv2 boxes, cv3 classes) are quantized, so pixel boxes and 0..1 scores never share one int8 scale.
    XNNPACKQuantizer cannot exempt a module (and propagates annotations past module filters), so the decode's
    annotations are removed after it annotates."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)

    head = next((n for n, m in net.named_modules() if type(m).__name__ in DETECT), None)

    class HeadFloat(XNNPACKQuantizer):
        def annotate(self, model):
            model = super().annotate(model)
            for node in model.graph.nodes:
                if head is not None and in_decode(node, head):
                    node.meta.pop("quantization_annotation", None)
            return model

    return HeadFloat().set_global(get_symmetric_quantization_config(is_per_channel=True))


def in_decode(node, head: str) -> bool:
    """The node comes from the detection head, outside its conv branches."""
    scopes = {path.removeprefix("L['self'].") for path, _ in node.meta.get("nn_module_stack", {}).values()}
    return head in scopes and not scopes & {f"{head}.cv2", f"{head}.cv3"}


def quantize_pt2e(net, example, calib):
    """PT2E int8 (int8_quantizer) calibrated on the calibration set; the exported program."""
    torch = require("torch", "ExecuTorch builds")
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    graph = torch.export.export(net, (example,)).module()
    prepared = prepare_pt2e(graph, int8_quantizer(net))
    with torch.no_grad():
        for blob in calib.batches(1):
            prepared(torch.from_numpy(blob))
    return torch.export.export(convert_pt2e(prepared), (example,))


@contextlib.contextmanager
def native_stderr_muted():
    """File descriptor 2 to /dev/null: the runtime's C++ log lines at load (cpuinfo probing) are not edgekit's output;
    its failures still raise."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


class ExecuTorchBackend(Backend):
    name = "executorch"
    suffixes = (".pte",)
    reads_folders = True  # an Ultralytics ExecuTorch export folder (model.pte, metadata.yaml)
    module = extra = "executorch"
    device_kinds = ("cpu",)
    executes = ("fp32", "int8")
    builds = ("fp32", "int8")
    build_from = "checkpoint"
    build_modules = ("torch", "torchao", "ultralytics")
    build_extra = "executorch-build"
    calibrated = ("int8",)

    @classmethod
    def build_impl(cls, source: Path, precision: str, folder: Path, meta, calib=None, log=print, work=None,
                   **opts) -> tuple[Path, dict]:
        torch = require("torch", "ExecuTorch builds")
        net, example = export_module(source, meta.imgsz)
        model = folder / "model.pte"
        with torch.no_grad():
            program = (torch.export.export(net, (example,)) if precision == "fp32"
                       else quantize_pt2e(net, example, calib))
        lower(program, model)
        facts = {"executorch": {"delegate": "XnnpackPartitioner",
                                "quantizer": "XNNPACKQuantizer symmetric per-channel (PT2E)" if precision == "int8"
                                else None}}
        return model, facts

    def program_file(self) -> Path:
        """The artifact's .pte: the file, or the one .pte in its folder."""
        p = Path(self.path)
        if not p.is_dir():
            return p
        hits = sorted(p.glob("*.pte"))
        if len(hits) != 1:
            raise ArtifactError(f"{p}: expected one ExecuTorch .pte file in this folder, found {len(hits)}")
        return hits[0]

    def load_impl(self) -> None:
        rt = require("executorch.runtime", "the ExecuTorch backend")
        self.torch = require("torch", "the ExecuTorch backend")
        if parse_device(self.device)[0] != "cpu":
            raise ArtifactError(f"device '{self.device}' is not supported by the executorch backend (use cpu)")
        try:
            with native_stderr_muted():
                self.method = rt.Runtime.get().load_program(self.program_file()).load_method("forward")
        except Exception as e:  # the runtime raises RuntimeError/ValueError with its own codes
            raise ArtifactError(f"{self.path}: ExecuTorch cannot load this program: "
                                f"{(str(e).strip().splitlines() or [type(e).__name__])[0]}") from None
        self._batch = 1
        self.lock = threading.Lock()

    def infer_impl(self, blob: np.ndarray) -> np.ndarray:
        x = self.torch.from_numpy(np.ascontiguousarray(blob, np.float32))
        with self.lock:
            out = self.method.execute([x])[0]
        return out.numpy().astype(np.float32, copy=True)

    def close_impl(self) -> None:
        del self.method
