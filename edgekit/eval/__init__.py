"""Evaluation: mAP of an artifact through Engine, with a maintained COCO evaluator; used by quantize, train and bench."""
from .accuracy import EVAL_CONF, EVAL_IOU, EVAL_MAX_DET, check_classes, coco_map, evaluate

__all__ = ["EVAL_CONF", "EVAL_IOU", "EVAL_MAX_DET", "check_classes", "coco_map", "evaluate"]
