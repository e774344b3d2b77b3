"""The sweep behind train-export, as one package.

pipeline: the Pipeline (its configuration, checks and scheduling: grid, or successive halving over trials
model x imgsz x strategy) made of its parts: stages (stage records, content keys, run-relative paths, storage
push/pull), steps (a trial's training, export and per-variant build and eval), build (each backend/precision's
artifact and its accuracy gate), measure (speed, once per graph, on the target; sustained runs). variants: the
backend x precision pairs a target gets. report: the table, the Pareto front, the recommendation and the files.
A trial is the unit an executor runs (Pipeline.run_trial, given the shared config and the trial's stage-record
folder). executor: where tasks run (this process, or Ray tasks with a bench node); storage: the run folder every
node sees (a shared path, or a pyarrow.fs URI behind node-local mirrors); merge: one report from the records of
several runs.
"""
from .halving import rungs, survivors
from .speed import graph_key
from .trial import Trial

__all__ = ["Trial", "rungs", "survivors", "graph_key"]
