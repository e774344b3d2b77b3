"""Which input sizes and models a sweep should try, from the box-size profile and the target.

Input size: a box of relative size f (sqrt(w*h) over the image's long side) covers f*S pixels at input size S; below
about MIN_BOX_PX pixels a YOLO-class detector (stride 8 at its finest level) barely sees it. The suggested sizes are
the two smallest candidates at which at most a quarter (MAX_TINY) of the boxes fall under that; when even the largest leaves
more, tiling is suggested. Sizes far above the images' own resolution only upsample, so they are left out.
"""
from __future__ import annotations

import numpy as np

CANDIDATES = (320, 480, 640, 960, 1280)
MIN_BOX_PX = 10.0
MAX_TINY = 0.25
# small detectors worth comparing per kind of target (Ultralytics names; weights must be present or downloadable)
MODELS = {"edge": ["yolov8n.pt", "yolo11n.pt"], "cuda": ["yolo11n.pt", "yolo11s.pt"]}


def box_fractions(ds, sample: int = 50) -> tuple[np.ndarray, float | None]:
    """sqrt(w*h) of train boxes over their image's long side (up to `sample` images read), and the median long side."""
    from ..errors import DataError
    from ..runtime.images import read_image

    samples = ds.samples("train")
    step = max(1, len(samples) // sample)
    fr, sides = [], []
    for s in samples[::step]:
        if not len(s.boxes):
            continue
        try:
            h, w = read_image(s.image).shape[:2]
        except DataError:
            continue
        fr.append(np.sqrt(s.boxes[:, 2] * w * s.boxes[:, 3] * h) / max(h, w))
        sides.append(max(h, w))
    return (np.concatenate(fr) if fr else np.zeros(0)), (float(np.median(sides)) if sides else None)


def suggest_imgsz(fractions: np.ndarray, native: float | None = None) -> tuple[list[int], bool, list[str]]:
    """(sizes to try, whether tiling is suggested, reasons) for boxes of these relative sizes."""
    if not len(fractions):
        return [320, 640], False, ["no boxes to size: the default pair"]
    tiny = {s: float((fractions * s < MIN_BOX_PX).mean()) for s in CANDIDATES}
    above = [s for s in CANDIDATES if native is not None and s >= native]
    cap = [s for s in CANDIDATES if not above or s <= above[0]]  # up to the first size at or above the images' own
    ok = [s for s in cap if tiny[s] <= MAX_TINY]
    why = [f"at {s} px {tiny[s]:.0%} of the boxes would be under {MIN_BOX_PX:g} px" for s in (320, 640)]
    if ok:
        sizes = ok[:2]
        if sizes[0] > 320:
            why.append(f"most small boxes vanish at 320 px: start the list at {sizes[0]}")
        return sizes, False, why
    top = cap[-1] if cap else CANDIDATES[-1]
    why.append(f"even at {top} px {tiny[top]:.0%} of the boxes stay under {MIN_BOX_PX:g} px: tile the images "
               f"(train and infer on crops) rather than grow the input further")
    return [top], True, why


def suggest_models(target: str) -> list[str]:
    return list(MODELS["cuda" if str(target).startswith("cuda") else "edge"])


def domain_decided_by(dom: dict, box_term: float) -> str:
    """'frechet' when the embedding band decided; in its middle band, what tipped the class/box rule."""
    if dom.get("band") != "moderate" or dom.get("closeness") == "moderate":
        return "frechet"
    return "class names" if box_term == 0 else "class names and box sizes"
