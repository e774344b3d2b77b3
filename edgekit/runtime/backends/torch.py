"""PyTorch backend: an Ultralytics .pt on cpu or cuda:N, the baseline beside exported artifacts.

Options: half (FP16; default True on CUDA), cuda_graph (capture a CUDA graph for batch 1; default False),
trust_checkpoint (skip the restricted-unpickler check; default False: see edgekit.checkpoint).
The output is the raw (B, 4 + nc, N) tensor as a numpy array, so the shared postprocess applies.
"""
from __future__ import annotations

import threading

import numpy as np

from ..._imports import require
from ...errors import ArtifactError
from ..devices import parse_device
from .base import Backend


def torch_device(device: str) -> str:
    kind, idx = parse_device(device)
    if kind in ("cpu", "cuda") and (idx is None or kind == "cuda"):
        return kind if idx is None else f"cuda:{idx}"
    raise ArtifactError(f"device '{device}' is not supported by the torch backend (use cpu or cuda:N)")


class TorchBackend(Backend):
    name = "torch"
    suffixes = (".pt", ".pth")
    module, extra = "torch", "train"
    device_kinds = ("cpu", "cuda")
    executes = ("fp32", "fp16")

    @classmethod
    def devices_impl(cls) -> list[str]:
        torch = require("torch", "the PyTorch backend")
        return ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]

    @classmethod
    def describe_impl(cls) -> dict:
        return {"cuda": require("torch", "the PyTorch backend").version.cuda}

    @classmethod
    def precisions(cls, device: str) -> tuple[str, ...]:
        """fp16 (half) on CUDA only."""
        on_gpu = parse_device(device)[0] == "cuda"
        return tuple(p for p in super().precisions(device) if p != "fp16" or on_gpu)

    @classmethod
    def offers(cls, target: str, explicit: bool = False) -> tuple[str, ...]:
        """None: a checkpoint is the sweep's input, not one of its deployable artifacts."""
        return ()

    @classmethod
    def runner(cls, device: str):
        from ..concurrency import Runner, ThreadedRunner

        return ThreadedRunner if parse_device(device)[0] == "cuda" else Runner

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lock = threading.Lock()  # one model (and one CUDA graph) shared by every calling thread

    def load_impl(self) -> None:
        from ..._ultralytics import ultralytics

        ul = ultralytics()
        torch = self.torch = require("torch", "the PyTorch backend")
        self.dev = torch.device(torch_device(self.device))
        if self.dev.type == "cuda" and not torch.cuda.is_available():
            raise ArtifactError(f"device {self.device}: torch here has no CUDA (torch {torch.__version__}, "
                                f"CUDA build {torch.version.cuda})")
        from ...checkpoint import checked_copy
        from ...io import private_tempdir

        with private_tempdir("load") as tmp:  # Ultralytics unpickles fully: hand it the copy that was checked
            local = checked_copy(self.path, tmp, trust=bool(self.options.get("trust_checkpoint", False)))
            try:
                yolo = ul.YOLO(str(local))
            except Exception as e:
                raise ArtifactError(f"{self.path}: not a loadable Ultralytics checkpoint "
                                    f"({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})"
                                    ) from None
        net = yolo.model
        if hasattr(net, "fuse"):
            net = net.fuse(verbose=False)
        self.half = bool(self.options.get("half", self.dev.type == "cuda"))
        if self.half and self.dev.type != "cuda":
            raise ArtifactError(f"{self.path}: half precision needs a CUDA device (got {self.device})")
        net = net.to(self.dev).eval()
        self.net = net.half() if self.half else net.float()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.graph, self._batch = None, None  # any batch size
        self.use_graph = bool(self.options.get("cuda_graph", False)) and self.dev.type == "cuda"

    def _forward(self, x):
        y = self.net(x)
        return y[0] if isinstance(y, (list, tuple)) else y

    def _capture(self, x):
        """Capture one forward pass at this input shape in a CUDA graph (after a side-stream warm-up)."""
        torch = self.torch
        self.static_in = x.clone()
        s = torch.cuda.Stream(self.dev)
        s.wait_stream(torch.cuda.current_stream(self.dev))
        with torch.cuda.stream(s):
            for _ in range(3):
                self._forward(self.static_in)
        torch.cuda.current_stream(self.dev).wait_stream(s)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_out = self._forward(self.static_in)

    def infer_impl(self, blob: np.ndarray) -> np.ndarray:
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(blob)).to(self.dev, non_blocking=True)
        x = x.half() if self.half else x.float()
        with self.lock, torch.inference_mode():
            if self.use_graph and x.shape[0] == 1:
                try:
                    if self.graph is None or self.static_in.shape != x.shape:
                        self._capture(x)
                    self.static_in.copy_(x)
                    self.graph.replay()
                    y = self.static_out
                except RuntimeError:  # capture unsupported here: run eagerly from now on
                    self.use_graph, self.graph = False, None
                    y = self._forward(x)
            else:
                y = self._forward(x)
            return y.float().cpu().numpy()


    @property
    def precision_executed(self) -> str:
        if self.half:
            return "fp16"
        tf32 = self.dev.type == "cuda" and self.torch.backends.cudnn.allow_tf32
        return "tf32" if tf32 else "fp32"

    def info(self) -> dict:
        d = super().info()
        d.update(torch=self.torch.__version__, half=self.half, cuda_graph=self.graph is not None)
        return d

    def close_impl(self) -> None:
        self.net = self.graph = None
        if self.dev.type == "cuda":
            self.torch.cuda.empty_cache()
