"""The sweep behind train-export: trials (model x imgsz x strategy), successive halving, shared speed measurements.

A trial is the unit an executor runs (edgekit.pipeline.Pipeline.run_trial: train -> export -> build -> eval, given the
shared config and the trial's stage-record folder); speed is measured afterwards, once per graph, on the target.
executor: where tasks run (this process, or Ray tasks with a bench node); storage: the run folder every node sees (a
shared path, or a pyarrow.fs URI behind node-local mirrors); merge: one report from the records of several runs.
"""
from .halving import rungs, survivors
from .speed import graph_key
from .trial import Trial

__all__ = ["Trial", "rungs", "survivors", "graph_key"]
