"""`--strategy auto`: choose a strategy and its depth from the dataset, with the reasons written down.

Until `edgekit advise` (issue E) measures a feature-space distance, the domain distance is a documented rule:
  overlap  = share of the dataset's class names that are COCO classes (case/punctuation-insensitive, a few synonyms)
  box size = median sqrt(w*h) of the training boxes, normalized to the image (COCO's median is about 0.14)
  distance = 1 - overlap, plus 0.25 when the median box is tiny (< 0.04) or huge (> 0.6), capped at 1.
Then, with n training images and E epochs:
  no pretrained weights             -> scratch
  n < 300,   distance < 0.5         -> head                   (few images, features transfer: only the head)
  n < 300,   distance >= 0.5        -> schedule 0:backbone, E/2:none
  n < 3000,  distance < 0.5         -> schedule 0:neck, E/3:backbone, 2E/3:none   (gradual unfreezing)
  n < 3000,  distance >= 0.5        -> schedule 0:backbone, E/3:none
  n >= 3000                         -> full
"""
from __future__ import annotations

import numpy as np

from ..data.coco_names import coco_overlap
from .strategy import Strategy, parse_strategy

SMALL, LARGE = 0.04, 0.6


def domain_distance(names, box_sizes) -> tuple[float, list[str]]:
    """Rule-based distance in [0, 1] from class names and box sizes, with its reasons."""
    ov = coco_overlap(names)
    d = 1.0 - ov
    why = [f"{ov:.0%} of the {len(names)} class names are COCO classes"]
    if len(box_sizes):
        med = float(np.median(box_sizes))
        if med < SMALL or med > LARGE:
            d += 0.25
            why.append(f"median box size {med:.3f} of the image is {'tiny' if med < SMALL else 'huge'} "
                       f"compared with COCO (about 0.14): +0.25")
        else:
            why.append(f"median box size {med:.3f} of the image is within COCO's range")
    d = min(d, 1.0)
    why.append(f"rule-based domain distance {d:.2f} (1 - overlap, + 0.25 for unusual box sizes)")
    return d, why


def choose(n_images: int, distance: float, epochs: int, pretrained: bool = True) -> tuple[Strategy, list[str]]:
    """The strategy for a dataset of n_images at a domain distance, and why."""
    e = max(int(epochs), 1)
    near = distance < 0.5
    if not pretrained:
        return parse_strategy("scratch"), ["no pretrained weights given (architecture yaml): scratch"]
    if n_images < 300:
        if near:
            return parse_strategy("head"), [f"{n_images} training images (< 300) close to COCO: train the head only"]
        s = f"schedule:0:backbone,{max(e // 2, 1)}:none"
        return parse_strategy(s), [f"{n_images} training images (< 300) far from COCO: freeze the backbone, "
                                   f"then unfreeze everything for the second half"]
    if n_images < 3000:
        if near:
            a, b = max(e // 3, 1), max(2 * e // 3, 2)
            s = f"schedule:0:neck,{a}:backbone,{b}:none" if b > a else f"schedule:0:neck,{a}:none"
            return parse_strategy(s), [f"{n_images} training images (300-3000) close to COCO: gradual unfreezing "
                                       f"head -> neck -> backbone"]
        return parse_strategy(f"schedule:0:backbone,{max(e // 3, 1)}:none"), [
            f"{n_images} training images (300-3000) far from COCO: short frozen-backbone phase, then full"]
    return parse_strategy("full"), [f"{n_images} training images (>= 3000): fine-tune everything"]


def auto_strategy(dataset, epochs: int, pretrained: bool = True) -> tuple[Strategy, list[str]]:
    """Apply the rule to a loaded edgekit Dataset."""
    samples = dataset.samples("train")
    sizes = np.concatenate([np.sqrt(s.boxes[:, 2] * s.boxes[:, 3]) for s in samples if len(s.boxes)] or [np.zeros(0)])
    d, why = domain_distance(dataset.names, sizes)
    strategy, why2 = choose(len(samples), d, epochs, pretrained)
    return strategy, why + why2 + [f"auto -> {strategy.spec}"]
