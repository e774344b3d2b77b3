"""Runtime: Engine, backends, and the one shared pre/post-processing path."""
from .detections import Detections
from .engine import Engine
from .preprocess import Letterbox, letterbox, preprocess
from .postprocess import nms, postprocess

__all__ = ["Engine", "Detections", "Letterbox", "letterbox", "preprocess", "postprocess", "nms"]
