"""The drift scores, numpy only: Fréchet distance, population-stability index, image statistics."""
from __future__ import annotations

import numpy as np

IMAGE_STATS = ("brightness", "contrast", "sharpness", "size")
STATS_SIDE = 128  # image statistics are taken on a copy whose longest side is this (cheap, and size-independent)
PSI_EPS = 1e-3  # share given to an empty bin, so that PSI stays finite


def frechet_distance(mu1, s1, mu2, s2) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^1/2), the trace term from the eigenvalues of S1 S2."""
    ev = np.linalg.eigvals(s1 @ s2)
    tr_sqrt = np.sqrt(np.clip(ev.real, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def psi(expected, actual, eps: float = PSI_EPS) -> float:
    """Population-stability index sum((a - e) ln(a / e)) of two count vectors over the same bins (shares floored
    at eps); 0 when the shares match."""
    e = np.asarray(expected, np.float64)
    a = np.asarray(actual, np.float64)
    if e.shape != a.shape or e.sum() <= 0 or a.sum() <= 0:
        raise ValueError("psi needs two non-empty count vectors of the same bins")
    e = np.maximum(e / e.sum(), eps)
    a = np.maximum(a / a.sum(), eps)
    return float(((a - e) * np.log(a / e)).sum())


def image_stats(image: np.ndarray) -> np.ndarray:
    """(brightness, contrast, sharpness, size) of an HWC uint8 BGR image: mean and std of its grey levels, log10 of
    1 + the variance of its Laplacian (at STATS_SIDE px), and sqrt(width * height) in pixels."""
    import cv2

    h, w = image.shape[:2]
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    scale = STATS_SIDE / max(h, w)
    if scale < 1:
        grey = cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    lap = cv2.Laplacian(grey, cv2.CV_32F)
    return np.array([grey.mean(), grey.std(), np.log10(1.0 + float(lap.var())), np.sqrt(float(h * w))], np.float64)
