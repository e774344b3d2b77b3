"""Datasets: Ultralytics data.yaml and COCO json readers, validation, calibration sampling."""
from .dataset import Dataset, Sample, load_dataset
from ..runtime.images import read_image

__all__ = ["Dataset", "Sample", "load_dataset", "read_image"]
