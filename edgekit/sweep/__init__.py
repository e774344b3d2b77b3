"""The sweep behind train-export: trials (model x imgsz x strategy), successive halving, shared speed measurements.

A trial is the unit an executor runs (edgekit.pipeline.Pipeline.run_trial: train -> export -> build -> eval, given the
shared config and the trial's stage-record folder); speed is measured afterwards, once per graph, on the target.
"""
from .halving import rungs, survivors
from .speed import graph_key
from .trial import Trial

__all__ = ["Trial", "rungs", "survivors", "graph_key"]
