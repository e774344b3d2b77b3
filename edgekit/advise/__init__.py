"""advise: profile a dataset, measure its distance from COCO, and decide which strategies are worth training.

The decision rule (edgekit.advise.rule) is the one `--strategy auto` uses too.
"""
from .advice import advise, gpu_hours
from .rule import choose, class_box_distance, closeness, domain_verdict

__all__ = ["advise", "gpu_hours", "choose", "class_box_distance", "closeness", "domain_verdict"]
