"""The one rule that turns a dataset's size and its distance from COCO into a fine-tuning strategy.

Both `edgekit advise` (its first suggestion) and `--strategy auto` (edgekit.train.auto) decide with it:
  closeness: the Fréchet band of the backbone embeddings (edgekit.advise.domain) decides; in its middle band the
             class/box rule below tips it: near when <= 0.5, far when > 0.75, else moderate.
  class/box rule = 1 - share of the class names that are COCO classes, + 0.25 when the median box (sqrt(w*h)
             normalized to the image; COCO's is about 0.14) is tiny (< 0.04) or huge (> 0.6), capped at 1.
Then, with n training images and E epochs:
  no pretrained weights             -> scratch
  n < 300,   near                   -> head                   (few images, features transfer: only the head)
  n < 300,   not near               -> schedule 0:backbone, E/2:none
  n < 3000,  near                   -> schedule 0:neck, E/3:backbone, 2E/3:none   (gradual unfreezing)
  n < 3000,  not near               -> schedule 0:backbone, E/3:none
  n >= 3000                         -> full
"""
from __future__ import annotations

import random

import numpy as np

from ..data.coco_names import coco_overlap

SMALL, LARGE = 0.04, 0.6
NEAR_RULE, FAR_RULE = 0.5, 0.75


def class_box_distance(names, box_sizes) -> tuple[float, list[str]]:
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
    why.append(f"class/box distance {d:.2f} (1 - overlap, + 0.25 for unusual box sizes)")
    return d, why


def closeness(band: str, rule_distance: float) -> str:
    """'near', 'moderate' or 'far': the Fréchet band, with the class/box rule deciding inside its middle band."""
    if band != "moderate":
        return band
    return "near" if rule_distance <= NEAR_RULE else "far" if rule_distance > FAR_RULE else "moderate"


def box_sizes(dataset) -> np.ndarray:
    """sqrt(w*h) of every training box, normalized to its image."""
    samples = dataset.samples("train")
    return np.concatenate([np.sqrt(s.boxes[:, 2] * s.boxes[:, 3]) for s in samples if len(s.boxes)] or [np.zeros(0)])


def domain_verdict(dataset, sample: int = 128, weights=None) -> dict:
    """Fréchet distance of up to `sample` seeded train images, the class/box rule, and the closeness they give."""
    from .domain import domain_distance

    train = dataset.samples("train")
    imgs = [s.image for s in random.Random(0).sample(train, min(sample, len(train)))]
    dom = domain_distance(imgs, weights)
    rule, why = class_box_distance(dataset.names, box_sizes(dataset))
    dom["class_name_overlap_coco"] = round(coco_overlap(dataset.names), 3)
    dom["class_box_distance"] = round(rule, 3)
    dom["closeness"] = closeness(dom["band"], rule)
    dom["reasons"] = why + [f"Fréchet distance {dom['frechet_distance']:.2f} ({dom['band']}) -> {dom['closeness']}"]
    return dom


def choose(n_images: int, closeness: str, epochs: int, pretrained: bool = True) -> tuple[str, list[str]]:
    """The strategy spec for a dataset of n_images at a closeness to COCO ('near', 'moderate', 'far'), and why."""
    e = max(int(epochs), 1)
    near = closeness == "near"
    if not pretrained:
        return "scratch", ["no pretrained weights given (architecture yaml): scratch"]
    if n_images < 300:
        if near:
            return "head", [f"{n_images} training images (< 300) close to COCO: train the head only"]
        s = f"schedule:0:backbone,{max(e // 2, 1)}:none"
        return s, [f"{n_images} training images (< 300) far from COCO: freeze the backbone, "
                                   f"then unfreeze everything for the second half"]
    if n_images < 3000:
        if near:
            a, b = max(e // 3, 1), max(2 * e // 3, 2)
            s = f"schedule:0:neck,{a}:backbone,{b}:none" if b > a else f"schedule:0:neck,{a}:none"
            return s, [f"{n_images} training images (300-3000) close to COCO: gradual unfreezing "
                                       f"head -> neck -> backbone"]
        return f"schedule:0:backbone,{max(e // 3, 1)}:none", [
            f"{n_images} training images (300-3000) far from COCO: short frozen-backbone phase, then full"]
    return "full", [f"{n_images} training images (>= 3000): fine-tune everything"]
