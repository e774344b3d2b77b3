"""Distance from the pretraining domain: Fréchet distance between backbone embeddings.

Embeddings are the global-average-pooled output of the bundled COCO YOLOv8n backbone (the SPPF layer, 256 channels)
on letterboxed images; the COCO reference statistics were computed once from the 128 coco128 train images and ship as
edgekit/assets/coco_backbone_stats.npz (see benchmarks/make_coco_stats.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .._imports import require
from ..drift.scores import frechet_distance  # one implementation, shared with drift tracking
from ..runtime.preprocess import preprocess
from ..runtime.images import read_image

STATS = Path(__file__).resolve().parent.parent / "assets" / "coco_backbone_stats.npz"
EMBED_IMGSZ = 320
# Fréchet distances measured with this embedding (128 images each; benchmarks/results/E_pipeline.md): coco128 val
# (held out from the reference) 4.1, Vehicles-OpenImages 9.5, DeepPCB 12.7. Bands chosen between them.
NEAR, FAR = 8.0, 11.0


def backbone_embeddings(images: list[Path], weights=None, imgsz: int = EMBED_IMGSZ, batch: int = 16) -> np.ndarray:
    """(n, 256) pooled backbone features of the COCO YOLOv8n for each image."""
    torch = require("torch", "the domain distance")
    from .._ultralytics import ultralytics
    from ..assets import demo_weights

    ul = ultralytics()
    net = ul.YOLO(str(weights or demo_weights())).model.float().eval()
    n_backbone = len(net.yaml["backbone"])
    layers = net.model[:n_backbone]
    feats = []
    with torch.no_grad():
        for s in range(0, len(images), batch):
            blob, _ = preprocess([read_image(p) for p in images[s:s + batch]], (imgsz, imgsz))
            x = torch.from_numpy(blob)
            for m in layers:
                x = m(x)
            feats.append(x.mean((2, 3)).numpy().astype(np.float64))
    return np.concatenate(feats)


def stats(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return emb.mean(0), np.cov(emb, rowvar=False)


def coco_reference() -> tuple[np.ndarray, np.ndarray]:
    d = np.load(STATS)
    return d["mu"], d["sigma"]


def domain_distance(images: list[Path], weights=None) -> dict:
    """Fréchet distance of these images' embeddings to the shipped COCO statistics, with a band."""
    emb = backbone_embeddings(images, weights)
    mu, sigma = stats(emb)
    fd = frechet_distance(mu, sigma, *coco_reference())
    band = "near" if fd < NEAR else "far" if fd >= FAR else "moderate"
    return {"frechet_distance": round(fd, 3), "band": band, "images": len(images),
            "reference": "coco128 train (128 COCO 2017 images), YOLOv8n backbone", "thresholds": {"near": NEAR, "far": FAR}}
