"""Multi-GPU training (Ultralytics DDP) that keeps the strategy, and brings rank 0's results back to the parent.

Ultralytics trains on several GPUs by cloudpickling {trainer class, vars(args), model, callbacks} into a file and
launching `torch.distributed.run` workers that rebuild the trainer as `cls(cfg, overrides=args, _callbacks=callbacks)`.
The plan travels inside those callbacks: the strategy hooks are bound methods of the parent's Plan, so each worker
unpickles one copy of it (strategy, backbone LR multiplier, the resumed run's epoch records), and `adopt_plan` puts
that copy back on `trainer.plan`, where get_model (LoRA), build_optimizer (LR groups), optimizer_step (re-warm-up,
EMA sync) and save_model (LoRA merge) read it. The callbacks rather than an environment variable or a side file:
they are the state Ultralytics already ships to its workers for this, the hooks the worker runs and the plan the
trainer reads are then the same object (no second copy that could disagree), and no other process inherits it.

Only rank 0 records. The other ranks validate nothing (their metrics would read as mAP 0), so their Plan copy logs
and writes nothing. Rank 0 writes its epoch records, the schedule it applied and the final metrics of best.pt to
save_dir/edgekit_ddp.json after every epoch and at the end; the parent adopts them (`adopt_results`) and writes
train.json as single-device training does.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import ArtifactError, EdgekitError, MissingDependency

RESULTS = "edgekit_ddp.json"  # rank 0 -> parent, in Ultralytics' save_dir
CLOUDPICKLE = "3.1.1"  # Ultralytics 8.4's generate_ddp_file needs cloudpickle>=3.1.1 (and would pip-install it)


def in_worker() -> bool:
    """True inside a process started by torch.distributed.run (it sets LOCAL_RANK, whatever the world size)."""
    return "LOCAL_RANK" in os.environ


def records() -> bool:
    """True on the rank that records: rank 0 (Ultralytics' RANK reads -1 when the world size is 1)."""
    from ultralytics.utils import RANK

    return RANK in (-1, 0)


def require_cloudpickle() -> None:
    """MissingDependency (one line) unless cloudpickle>=3.1.1 imports: Ultralytics would try to pip-install it."""
    import importlib.metadata as md

    from ultralytics.utils.checks import check_version

    try:
        import cloudpickle  # noqa: F401

        found = md.version("cloudpickle")
    except (ImportError, md.PackageNotFoundError):
        found = None
    if found is None or not check_version(found, f">={CLOUDPICKLE}"):
        what = f"cloudpickle {found} is too old" if found else "cloudpickle is not installed"
        raise MissingDependency(f"multi-GPU training needs cloudpickle>={CLOUDPICKLE} (Ultralytics pickles the "
                                f"trainer for its DDP workers) and {what}: pip install 'edgekit[train]' "
                                f"or pip install 'cloudpickle>={CLOUDPICKLE}'")


def before_launch(trainer) -> None:
    """Parent side, before Ultralytics writes the DDP file: cloudpickle, picklable callbacks, no stale results."""
    require_cloudpickle()
    check_callbacks(trainer.callbacks)
    results_path(trainer).unlink(missing_ok=True)


def check_callbacks(callbacks: dict) -> None:
    """One-line EdgekitError naming the callback that cannot be pickled for the workers (with the plan, the log)."""
    import cloudpickle

    for event, fns in callbacks.items():
        for fn in fns:
            try:
                cloudpickle.dumps(fn)
            except Exception as e:  # pickling fails with TypeError, PicklingError, AttributeError... alike
                name = getattr(fn, "__qualname__", repr(fn))
                raise EdgekitError(f"multi-GPU training: callback {name} ({event}) cannot be sent to the DDP "
                                   f"workers: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def results_path(trainer) -> Path:
    return Path(trainer.save_dir) / RESULTS


def plan_in(callbacks: dict):
    """The Plan whose hooks are among these callbacks, or None."""
    from .yolo import Plan

    for fns in callbacks.values():
        for fn in fns:
            owner = getattr(fn, "__self__", None)
            if isinstance(owner, Plan):
                return owner
    return None


def _silent(*args, **kwargs) -> None:
    pass


def adopt_plan(trainer) -> None:
    """Worker side: trainer.plan = the Plan that came with the callbacks; rank 0 records, the other ranks stay quiet."""
    plan = plan_in(trainer.callbacks)
    if plan is None:
        import ultralytics

        raise EdgekitError(f"DDP worker (LOCAL_RANK {os.environ.get('LOCAL_RANK')}): the strategy plan did not "
                           f"arrive with the trainer's callbacks (Ultralytics {ultralytics.__version__} rebuilds "
                           f"its workers differently than edgekit expects); train on one device")
    trainer.plan = plan
    if records():
        trainer.add_callback("on_fit_epoch_end", write_results)
        trainer.add_callback("on_train_end", write_final_results)
    else:
        plan.on_epoch, plan.log = None, _silent


def _results(trainer, final: bool) -> dict:
    plan = trainer.plan
    metrics = {k: float(v) for k, v in (trainer.metrics or {}).items()} if final else None
    return {"records": [plan.records[e] for e in sorted(plan.records)], "applied": plan.applied,
            "metrics": metrics, "finished": final}


def write_results(trainer) -> None:
    """Rank 0, after each epoch: the epoch records and the schedule so far."""
    from ..io import atomic_write_json

    atomic_write_json(results_path(trainer), _results(trainer, final=False))


def write_final_results(trainer) -> None:
    """Rank 0, at the end: also the final validation of best.pt (what single-device training reports)."""
    from ..io import atomic_write_json

    atomic_write_json(results_path(trainer), _results(trainer, final=True))


def adopt_results(trainer, plan) -> dict | None:
    """Parent side: load what rank 0 wrote into the parent's plan and trainer; None when it wrote nothing."""
    try:
        doc = json.loads(results_path(trainer).read_text())
    except (OSError, ValueError):
        return None
    plan.records = {int(r["epoch"]) - 1: r for r in doc.get("records", [])}
    plan.applied = list(doc.get("applied", []))
    if doc.get("metrics"):
        trainer.metrics = doc["metrics"]
    return doc


def finished_results(trainer, plan) -> dict:
    """Parent side after the workers exited cleanly: rank 0's results, or a one-line ArtifactError."""
    doc = adopt_results(trainer, plan)
    path = results_path(trainer)
    if doc is None:
        raise ArtifactError(f"{path}: the DDP workers exited without results from rank 0")
    if not doc.get("finished") or not any("map50_95" in r for r in doc.get("records", [])):
        raise ArtifactError(f"{path}: rank 0 of the DDP run finished no validated epoch")
    return doc
