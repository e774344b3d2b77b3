"""Evaluation: mAP of an artifact through Engine, with a maintained COCO evaluator; per-class and per-size AP and
bootstrap intervals; used by quantize, train and bench."""
from .accuracy import EVAL_CONF, EVAL_IOU, EVAL_MAX_DET, check_classes, coco_map, evaluate
from .bootstrap import Matches, bootstrap_ci, class_drops, images_to_separate, paired_diff
from .threshold import MIN_CLASS_BOXES, at_conf, choose_threshold, recall_drops

__all__ = ["EVAL_CONF", "EVAL_IOU", "EVAL_MAX_DET", "check_classes", "coco_map", "evaluate", "Matches",
           "bootstrap_ci", "class_drops", "images_to_separate", "paired_diff", "MIN_CLASS_BOXES", "at_conf",
           "choose_threshold", "recall_drops"]
