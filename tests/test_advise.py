"""advise proposes the sweep's axes: input sizes from the box-size profile, models per target, what decided the band."""
from __future__ import annotations

import numpy as np
import pytest

from edgekit.advise.axes import domain_decided_by, suggest_imgsz, suggest_models


@pytest.mark.parametrize("median_frac, native, sizes, tile", [
    (0.15, 1024, [320, 480], False),  # COCO-like boxes: the small sizes are enough
    (0.02, 1024, [640, 960], False),  # 6 px at 320: start at 640
    (0.004, 4000, [1280], True),      # tiny even at 1280: tile
    (0.02, 500, [640], False),        # sizes far above the images' own resolution only upsample
])
def test_input_sizes_follow_the_box_sizes(median_frac, native, sizes, tile):
    fr = np.random.default_rng(0).lognormal(np.log(median_frac), 0.3, 2000)
    got, tiling, why = suggest_imgsz(fr, native)
    assert (got, tiling) == (sizes, tile), why
    if sizes[0] > 320 and not tile:
        assert any(f"start the list at {sizes[0]}" in w for w in why)


def test_models_and_what_decided_the_domain_band():
    assert suggest_models("cpu") == ["yolov8n.pt", "yolo11n.pt"] and suggest_models("cuda:0")[1] == "yolo11s.pt"
    assert domain_decided_by({"band": "near", "closeness": "near"}, 0.0) == "frechet"
    assert domain_decided_by({"band": "moderate", "closeness": "near"}, 0.0) == "class names"
    assert domain_decided_by({"band": "moderate", "closeness": "far"}, 0.25) == "class names and box sizes"
    assert domain_decided_by({"band": "moderate", "closeness": "moderate"}, 0.0) == "frechet"
