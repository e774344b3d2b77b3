"""edgekit: from an object-detection dataset to a fast, accurate engine on its target device.

Importing edgekit pulls numpy and OpenCV only: no torch, no ultralytics.
"""
from .errors import ArtifactError, DataError, EdgekitError, MissingDependency
from .runtime import Detections, Engine

__version__ = "0.1.0"
__all__ = ["Engine", "Detections", "EdgekitError", "DataError", "ArtifactError", "MissingDependency", "__version__"]
