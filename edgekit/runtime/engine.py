"""Engine: load an exported artifact and return detections, with numpy and one backend."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence, Union

import numpy as np

from .images import read_image
from ..errors import ArtifactError
from .backends import Backend, get_backend, pick_backend
from .detections import Detections
from .meta import ModelMeta, load_meta
from .postprocess import postprocess
from .preprocess import preprocess

Source = Union[str, Path, np.ndarray]


def refuse_unfinished(path: Path, sidecar: dict) -> None:
    """ArtifactError for an artifact whose sidecar says it failed its accuracy gate or was never judged."""
    status = sidecar.get("status") if isinstance(sidecar, dict) else None
    if status not in ("FAILED", "EVALUATING"):
        return
    gate = sidecar.get("accuracy_gate") or {}
    if status == "FAILED":
        why = (f"failed its accuracy gate (mAP50-95 drop {gate.get('drop_points', '?')} points, "
               f"allowed {gate.get('max_map_drop', '?')})")
    else:
        why = "is half-finished (sidecar status EVALUATING: its accuracy gate never completed)"
    raise ArtifactError(f"{path}: artifact {why}; to load it anyway pass Engine(..., allow_failed=True) "
                        f"or --allow-failed")


def check_precision(engine: "Engine", requested: str | None) -> None:
    """Refuse an Engine whose backend runs another float precision than the one asked for."""
    done = engine.precision_executed
    if not requested or done is None:
        return
    if requested.lower() not in done.split("+"):
        engine.close()
        raise ArtifactError(f"{engine.path}: {requested} execution was asked for, but the {engine.backend_name} "
                            f"backend runs this model in {done}")


DEFAULT_CONF = 0.25  # without a deployment threshold in the artifact's sidecar


def deployment_conf(meta: ModelMeta) -> float:
    """The conf recorded as the artifact's deployment threshold (edgekit quantize), else DEFAULT_CONF."""
    return DEFAULT_CONF if meta.conf is None else meta.conf


class Engine:
    """Detector runtime: Engine("model.onnx")("bus.jpg") -> Detections.

    The same preprocess/postprocess serve calibration, eval, bench and apps. An artifact whose sidecar status is
    FAILED (accuracy gate) or EVALUATING (gate never finished) is refused unless `allow_failed=True`.

    Precision: an artifact runs in the precision its sidecar names (fp32 and int8 artifacts in FP32 floats, on
    every backend); `precision="bf16"` (or "fp16") asks for another one, which the backend runs or refuses with
    ArtifactError. `precision_executed` says what the backend actually runs.

    Threads: one Engine may be called from several threads at once on every backend (OpenVINO: one infer request
    per call from a pool; ONNX Runtime: its session is thread-safe; torch and TensorRT: calls are serialized).
    For throughput, use the backend's runner (runtime.concurrency.make_runner: OpenVINO AsyncInferQueue,
    parallel sessions).
    """

    def __init__(self, path, device: str = "cpu", backend: str | None = None, conf: float | None = None,
                 iou: float = 0.7, max_det: int = 300, multi_label: bool = False, agnostic: bool = False,
                 allow_failed: bool = False, **options):
        path = Path(path)
        meta = load_meta(path, imgsz=options.pop("imgsz", None),  # imgsz, trust: .pt only
                         trust_checkpoint=bool(options.get("trust_checkpoint", False)))
        if not allow_failed:
            refuse_unfinished(path, meta.raw)
        name = backend or pick_backend(path, device)
        self._attach(get_backend(name)(path, device, meta, **options).load(), conf, iou, max_det, multi_label,
                     agnostic)
        check_precision(self, options.get("precision"))

    @classmethod
    def from_backend(cls, backend: Backend, conf: float | None = None, iou: float = 0.7, max_det: int = 300,
                     multi_label: bool = False, agnostic: bool = False) -> "Engine":
        """An Engine over a Backend built elsewhere, carrying its ModelMeta (e.g. over a model NNCF compiled)."""
        if backend.meta is None:
            raise ArtifactError(f"{backend.path}: a backend handed to Engine needs its model metadata (meta=...)")
        eng = cls.__new__(cls)
        eng._attach(backend.load(), conf, iou, max_det, multi_label, agnostic)
        return eng

    def _attach(self, backend: Backend, conf, iou, max_det, multi_label, agnostic) -> None:
        self.backend, self.backend_name, self.path, self.device = backend, backend.name, backend.path, backend.device
        self.meta: ModelMeta = backend.meta
        conf = deployment_conf(self.meta) if conf is None else conf
        self.conf, self.iou, self.max_det, self.multi_label, self.agnostic = conf, iou, max_det, multi_label, agnostic

    # stages -----------------------------------------------------------------------------------
    @staticmethod
    def decode(source: Source) -> np.ndarray:
        """A path or an HWC uint8 BGR array -> HWC uint8 BGR array."""
        if isinstance(source, np.ndarray):
            if source.dtype != np.uint8 or source.ndim not in (2, 3):
                raise ValueError(f"expected an HWC uint8 BGR image, got {source.dtype} array of shape {source.shape}")
            return source
        return read_image(source)

    def preprocess(self, images: Sequence[np.ndarray]):
        """Letterbox and stack decoded images: (blob, [Letterbox])."""
        return preprocess(list(images), self.meta.imgsz, self.meta.pad_value, dtype=self.backend.input_dtype)

    def infer(self, blob: np.ndarray) -> np.ndarray:
        """Run the network on a blob of any batch size (split or padded to a fixed-batch model)."""
        return self.backend.infer(blob)

    def infer_embed(self, blob: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(the network's detection output, its pooled-backbone embedding or None when the artifact has none)."""
        return self.backend.infer_embed(blob)

    @property
    def has_embedding(self) -> bool:
        """The artifact gives the pooled-backbone output that drift tracking compares (edgekit export adds it)."""
        return self.backend.has_embedding

    def postprocess(self, raw: np.ndarray, infos, **overrides) -> list[Detections]:
        kw = dict(conf=self.conf, iou=self.iou, max_det=self.max_det, multi_label=self.multi_label,
                  agnostic=self.agnostic)
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return postprocess(np.asarray(raw, np.float32), infos, self.meta.names, self.meta.layout,
                           imgsz=self.meta.imgsz, **kw)

    # one call ---------------------------------------------------------------------------------
    def predict(self, images: Iterable[Source], **overrides) -> list[Detections]:
        arrays = [self.decode(s) for s in images]
        if not arrays:
            return []
        blob, infos = self.preprocess(arrays)
        return self.postprocess(self.infer(blob), infos, **overrides)

    # pipelined ---------------------------------------------------------------------------------
    def prefetch(self, sources: Iterable[Source], batch: int = 1, workers: int = 2):
        """Yield (blob, [Letterbox]) per batch, in order, decoded and preprocessed ahead in worker threads."""
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor
        from itertools import islice

        def prepare(chunk):
            return self.preprocess([self.decode(s) for s in chunk])

        it = iter(sources)
        pending: deque = deque()
        pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="edgekit-prefetch")
        try:
            while True:
                while len(pending) < 2 * max(1, workers) and (chunk := list(islice(it, batch))):
                    pending.append(pool.submit(prepare, chunk))
                if not pending:
                    return
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()
            pool.shutdown(wait=True, cancel_futures=True)

    def stream(self, sources: Iterable[Source], batch: int = 1, workers: int = 2, **overrides):
        """Yield Detections per source, in order; decode and preprocess overlap inference (see prefetch)."""
        for blob, infos in self.prefetch(sources, batch, workers):
            yield from self.postprocess(self.infer(blob), infos, **overrides)

    def __call__(self, source, **overrides):
        """One image (path or array) -> Detections; a list -> list of Detections."""
        if isinstance(source, (list, tuple)):
            return self.predict(source, **overrides)
        return self.predict([source], **overrides)[0]

    @property
    def precision_executed(self) -> str | None:
        """'fp32', 'bf16', 'fp16', 'int8+fp32', ...: what the backend runs (None when it cannot tell)."""
        return self.backend.precision_executed

    @property
    def names(self) -> list[str]:
        return self.meta.names

    def close(self) -> None:
        self.backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"Engine({str(self.path)!r}, backend={self.backend_name}, device={self.device}, imgsz={self.meta.imgsz})"
