"""Parity of an exported ONNX model against the PyTorch model on real images."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .._imports import require
from ..runtime.images import list_images, read_image
from ..runtime.preprocess import preprocess


def default_images(n: int = 4) -> list[Path]:
    from ..assets import demo_images

    return demo_images()[:n]


def parity_check(model, onnx_path, images=None, tol: float = 1e-3, n: int = 4) -> dict:
    """Max abs difference of raw outputs (boxes in px, class scores) between torch and ONNX Runtime."""
    torch = require("torch", "the parity check")
    ort = require("onnxruntime", "the parity check")
    if images is None:
        paths = default_images(n)
    elif isinstance(images, (str, Path)) and Path(images).is_dir():
        paths = list_images(Path(images))[:n]
    else:
        paths = [Path(p) for p in images][:n]
    net = model.model.float().eval()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    shape = sess.get_inputs()[0].shape
    imgsz = (shape[2], shape[3]) if isinstance(shape[2], int) else (640, 640)
    dmax_s = dmax_b = 0.0
    for p in paths:
        blob, _ = preprocess([read_image(p)], imgsz)
        with torch.no_grad():
            ref = net(torch.from_numpy(blob))
        ref = (ref[0] if isinstance(ref, (list, tuple)) else ref).numpy()
        got = sess.run(None, {name: blob})[0]
        if got.shape != ref.shape:
            return {"images": len(paths), "passed": False, "error": f"shape {got.shape} != {ref.shape}",
                    "max_abs_diff_scores": float("inf"), "max_abs_diff_boxes_px": float("inf")}
        d = np.abs(got - ref)
        if d.shape[1] > 4 and d.shape[1] < d.shape[2]:  # (B, 4 + nc, N)
            dmax_b, dmax_s = max(dmax_b, float(d[:, :4].max())), max(dmax_s, float(d[:, 4:].max()))
        else:  # (B, N, 4 + nc) or (B, N, 6)
            dmax_b, dmax_s = max(dmax_b, float(d[..., :4].max())), max(dmax_s, float(d[..., 4:].max()))
    return {"images": len(paths), "max_abs_diff_scores": dmax_s, "max_abs_diff_boxes_px": dmax_b,
            "tolerance": tol, "passed": bool(dmax_s <= tol)}
