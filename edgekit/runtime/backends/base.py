"""Base backend (after Polygraphy's BaseRunner): public methods validate, subclasses write *_impl."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import ArtifactError


class Backend:
    name = "base"

    def __init__(self, path, device: str = "cpu", meta=None, **options):
        self.path, self.device, self.meta, self.options = Path(path), device, meta, options
        self.loaded = False

    # public API -------------------------------------------------------------------------------
    def load(self) -> "Backend":
        if not self.loaded:
            self.load_impl()
            self.loaded = True
        return self

    def infer(self, blob: np.ndarray) -> np.ndarray:
        """Run a preprocessed NCHW batch; returns the first output as a numpy array."""
        if not self.loaded:
            self.load()
        if blob.ndim != 4 or blob.shape[1] != 3:
            raise ArtifactError(f"{self.path}: expected an NCHW batch with 3 channels, got shape {blob.shape}")
        return self.infer_impl(blob)

    def close(self) -> None:
        if self.loaded:
            self.close_impl()
            self.loaded = False

    def __enter__(self):
        return self.load()

    def __exit__(self, *exc):
        self.close()

    @property
    def input_dtype(self):
        return np.float32

    @property
    def fixed_batch(self) -> int | None:
        """Batch size the loaded model requires, or None when the batch is dynamic."""
        return 1

    @property
    def precision_executed(self) -> str | None:
        """Precision the loaded model actually runs in: 'fp32', 'fp16', 'bf16', or 'int8+<float part>'."""
        fp = "fp16" if np.dtype(self.input_dtype) == np.float16 else "fp32"
        return f"int8+{fp}" if self.meta is not None and self.meta.precision == "int8" else fp

    def info(self) -> dict:
        return {"backend": self.name, "device": self.device, "precision_executed": self.precision_executed}

    # to implement -----------------------------------------------------------------------------
    def load_impl(self) -> None:
        raise NotImplementedError

    def infer_impl(self, blob: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def close_impl(self) -> None:
        pass
