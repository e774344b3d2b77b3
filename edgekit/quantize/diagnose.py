"""Say what broke: how far the calibration images are from the eval images, and which layers lose most to INT8.

Layer SNR (10 log10 of signal power over error power, in dB; lower is worse) compares each quantized layer's float
input with its quantized version on a few calibration images. A backend's Quantizer computes the pairs
(`layer_snr`): ONNX Runtime with its own `qdq_loss_debug`, OpenVINO by adding the FakeQuantize inputs and outputs
as model outputs. The worst layers are the first ones the fallback keeps in float.
"""
from __future__ import annotations

import hashlib
import json
import random
import warnings
from pathlib import Path

import numpy as np

from .._imports import available
from ..data.calibration import CalibrationWarning

WORST = 5             # layers reported, and kept in float by the 'worst-layers' fallback
DIAGNOSE_IMAGES = 4   # calibration images the layer comparison runs on
DOMAIN_IMAGES = 128   # images embedded on each side (as advise's bands were measured) for the calib-to-eval distance
DOMAIN_MIN = 32       # fewer images on a side: the distance is not estimated (its covariance would be degenerate)


def snr_db(ref: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-noise ratio of `test` against `ref` in dB (inf when identical)."""
    ref, test = np.asarray(ref, np.float64), np.asarray(test, np.float64)
    noise = float(((ref - test) ** 2).sum())
    signal = float((ref ** 2).sum())
    if noise == 0:
        return float("inf")
    return 10 * np.log10(max(signal, 1e-30) / noise)


def worst_layers(snr: dict[str, float], n: int = WORST) -> list[dict]:
    """[{layer, snr_db}] of the n lowest finite SNRs, worst first."""
    rows = sorted(((k, v) for k, v in snr.items() if np.isfinite(v)), key=lambda kv: kv[1])[:n]
    return [{"layer": k, "snr_db": round(float(v), 2)} for k, v in rows]


def describe(layers: list[dict]) -> str:
    return ", ".join(f"{d['layer']} {d['snr_db']:.1f} dB" for d in layers)


def _sample(paths: list[Path], n: int, seed: int) -> list[Path]:
    return sorted(random.Random(seed).sample(list(paths), n)) if len(paths) > n else list(paths)


def _domain_key(a: list[Path], b: list[Path]) -> str:
    """The images compared (their content) and how many a side: what a cached distance stands for."""
    from ..io import sha256_file

    h = hashlib.sha256(f"{DOMAIN_IMAGES}|{len(a)}|".encode())
    for p in a + b:
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def calibration_domain(calib: list[Path], val: list[Path], seed: int = 0, cache: Path | None = None) -> dict:
    """Fréchet distance between the calibration and eval images (advise's backbone embedding); warns when far.

    Skipped (and said so in the record) without torch, or with fewer than DOMAIN_MIN images on a side. With `cache`
    (a JSON file), a distance measured before on the same images is read from it (the embedding costs seconds per
    image on a loaded CPU).
    """
    from ..advise.domain import FAR, NEAR, backbone_embeddings, frechet_distance, stats

    if min(len(calib), len(val)) < DOMAIN_MIN:
        return {"skipped": f"fewer than {DOMAIN_MIN} images on a side ({len(calib)} calibration, {len(val)} eval)"}
    if not available("torch"):  # the embedding runs the COCO backbone in torch (advise's)
        return {"skipped": "torch is not installed (pip install 'edgekit[train]' to measure it)"}
    a, b = _sample(calib, DOMAIN_IMAGES, seed), _sample(val, DOMAIN_IMAGES, seed)
    key = _domain_key(a, b)
    doc = _read_json(cache) if cache is not None else {}
    rec = doc.get(key)
    if not isinstance(rec, dict) or "frechet_distance" not in rec:
        fd = frechet_distance(*stats(backbone_embeddings(a)), *stats(backbone_embeddings(b)))
        band = "near" if fd < NEAR else "far" if fd >= FAR else "moderate"
        rec = {"frechet_distance": round(fd, 3), "band": band, "calibration_images": len(a), "eval_images": len(b),
               "thresholds": {"near": NEAR, "far": FAR}, "embedding": "edgekit.advise.domain (COCO YOLOv8n backbone)"}
        if cache is not None:
            from ..io import atomic_write_json

            Path(cache).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(cache, {**doc, key: rec})
    if rec["band"] != "near":
        warnings.warn(f"calibration images are {rec['band']} from the eval images (Fréchet distance "
                      f"{rec['frechet_distance']:.1f}, near < {NEAR:g}): INT8 ranges may not fit what the model will "
                      f"see; calibrate on deployment images (--calib-from DIR)", CalibrationWarning, stacklevel=2)
    return rec


def _read_json(path: Path) -> dict:
    """A cache file's mapping; an unreadable one counts as empty (what it held is measured again)."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}
