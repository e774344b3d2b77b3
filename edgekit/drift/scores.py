"""The drift scores, numpy only: Fréchet distance, population-stability index, image statistics."""
from __future__ import annotations

import numpy as np

IMAGE_STATS = ("brightness", "contrast", "sharpness", "size")
STATS_SIDE = 128  # image statistics are taken on a subsample whose longest side is about this (cheap, size-independent)
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
    1 + the variance of its Laplacian, on every k-th pixel of every k-th row (k so that the longest side is about
    STATS_SIDE: a view, no resampling, so that the cost is small and does not grow with the image), and
    sqrt(width * height) in pixels."""
    import cv2

    h, w = image.shape[:2]
    step = max(1, -(-max(h, w) // STATS_SIDE))
    small = np.ascontiguousarray(image[::step, ::step])
    grey = small if small.ndim == 2 else cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    mean, std = cv2.meanStdDev(grey)
    _, lap_std = cv2.meanStdDev(cv2.Laplacian(grey, cv2.CV_32F))
    return np.array([mean[0, 0], std[0, 0], np.log10(1.0 + float(lap_std[0, 0]) ** 2), np.sqrt(float(h * w))],
                    np.float64)
