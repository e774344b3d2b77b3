"""`train()`: one strategy, one Ultralytics run, out_dir/best.pt + out_dir/train.json (atomic)."""
from __future__ import annotations

import os

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ArtifactError, DataError, EdgekitError
from .._imports import tool_versions
from ..checkpoint import checked_copy
from ..io import atomic_path, private_tempdir
from ..outputs import check_outputs
from .record import cost, device_name, n_gpus, read_train_json, write_train_json
from .strategy import parse_strategy

BUNDLED = Path(__file__).resolve().parent.parent / "assets" / "yolov8n_coco.pt"


def _resolve_model(weights_or_arch, strategy) -> tuple[Path, str, bool]:
    """(the file to copy and check, the name the copy gets, has pretrained weights).

    An architecture yaml is a file, or the bare name of one of Ultralytics' own (yolov8n.yaml: the package's
    yolov8.yaml, copied as yolov8n.yaml so that Ultralytics reads the scale from the name); never a download.
    """
    w = str(weights_or_arch)
    p = Path(w)
    if p.suffix.lower() in (".yaml", ".yml"):
        src = p if p.is_file() else _package_yaml(w)
        if src is None:
            raise ArtifactError(f"{w}: architecture yaml not found (neither a file nor an Ultralytics model "
                                f"yaml such as yolov8n.yaml, yolo11n.yaml)")
        return src, p.name, False
    if p.suffix.lower() != ".pt":
        raise ArtifactError(f"{w}: expected Ultralytics weights (.pt) or an architecture yaml (e.g. yolov8n.yaml)")
    if not p.exists():
        raise ArtifactError(f"{w}: weights file not found (edgekit never downloads weights; "
                            f"bundled COCO YOLOv8n: {BUNDLED})")
    return p.resolve(), p.name, strategy.kind != "scratch"


def _package_yaml(name: str) -> Path | None:
    """Ultralytics' own architecture yaml for a bare name (yolov8n.yaml -> .../cfg/models/v8/yolov8.yaml), or None."""
    import re

    from ultralytics.utils import ROOT

    if "/" in name or "\\" in name or "://" in name:
        return None
    p = Path(name)
    unified = re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", p.stem) + p.suffix
    for n in (p.name, unified):
        hits = sorted((ROOT / "cfg" / "models").rglob(n))
        if hits:
            return hits[0]
    return None


def train_inputs(weights_or_arch, data, resume: bool = False) -> list:
    """What a training run reads (for edgekit.outputs): the dataset, and the weights or yaml unless resuming."""
    from ..outputs import data_inputs

    w = str(weights_or_arch)
    w = w.partition(":")[2] if w.startswith("yolo_nas") else w  # yolo_nas_s:CKPT
    return ([] if resume or not w else [w]) + data_inputs(data)


def _data_yaml(data, out_dir: Path, skip_bad: bool, log) -> tuple[Path, object]:
    """Validate the train and val samples as eval does, then write the view Ultralytics trains on (out_dir/.data).

    data: a data.yaml path or an already loaded Dataset (then its own skip_bad applies).
    """
    from ..data.dataset import Dataset, load_dataset

    ds = data if isinstance(data, Dataset) else load_dataset(data, skip_bad=skip_bad)
    if ds.source.suffix.lower() == ".json":
        raise DataError(ds.source, "training needs an Ultralytics data.yaml (images/ + labels/); "
                                   "a COCO json cannot be handed to the trainer as is")
    for split in ("train", "val"):
        if split not in ds.split_paths:
            raise DataError(ds.source, f"training needs a '{split}' split")
    yaml_path = ds.to_ultralytics_yaml(out_dir / "data.yaml", splits=("train", "val"))
    for s in ds.skipped:
        log(f"skipped: {s}")
    return yaml_path, ds


def _previous_run(out: Path, strategy, resume: bool, log) -> tuple[dict, object]:
    """(train.json of the run to resume, or {}; the strategy to train). ArtifactError when nothing can be resumed."""
    if not resume:
        return {}, strategy
    prev = read_train_json(out)
    if prev.get("status") == "done":
        return prev, strategy
    if not (out / "last.pt").exists():
        raise ArtifactError(f"{out / 'last.pt'}: nothing to resume (no checkpoint from an earlier run in {out})")
    if strategy is not None and prev and parse_strategy(strategy).spec not in (
            prev.get("resolved_strategy"), parse_strategy(prev.get("strategy", "full")).spec):
        raise EdgekitError(f"--resume: {out} was trained with strategy '{prev.get('strategy')}', "
                           f"not '{strategy}'; resume with the same strategy or start a new run")
    return prev, strategy if strategy is not None else prev.get("strategy", "full")


def _resolve_strategy(requested, epochs: int, ds, pretrained: bool, prev: dict, log):
    """(the strategy this run trains, the reasons auto gave); prev: the resumed run's train.json ({} if new)."""
    reasons = list(prev.get("reasons", []))
    resolved = requested.resolve(epochs)  # the bare 'schedule' depends on the epoch count
    if requested.kind == "auto":
        if prev.get("resolved_strategy"):
            resolved = parse_strategy(prev["resolved_strategy"])
        else:
            from .auto import auto_strategy

            resolved, reasons = auto_strategy(ds, epochs, pretrained)
        for r in reasons:
            log(f"edgekit: auto: {r}")
    return resolved, reasons


class _Record:
    """The run's train.json as it grows: written after each validated epoch, on interruption and at the end."""

    def __init__(self, out: Path, info: dict, plan, prev: dict, gpus: int, gpu_hour_usd: float, cpu_hour_usd: float):
        self.out, self.info, self.plan, self.prev, self.gpus = out, info, plan, prev, gpus
        self.prices = (gpu_hour_usd, cpu_hour_usd)
        self.wall_before, self.t_start = float(prev.get("wall_s", 0.0)), time.time()

    def snapshot(self, status: str) -> dict:
        plan = self.plan
        recs = [plan.records[e] for e in sorted(plan.records) if "map50_95" in plan.records[e]]
        best = max(recs, key=lambda r: (r["map50_95"] * 0.9 + r["map50"] * 0.1), default=None)
        return {**self.info, "status": status, "epochs": len(recs),
                "schedule": _schedule(self.prev.get("schedule", []), plan.applied),
                **cost(self.wall_before + time.time() - self.t_start, self.gpus, *self.prices),
                "map50": best["map50"] if best else None, "map50_95": best["map50_95"] if best else None,
                "best_epoch": best["epoch"] if best else None,
                "trainable_params": [r["trainable_params"] for r in recs],
                "epoch_s": [r["train_s"] for r in recs], "epoch_total_s": [r["epoch_s"] for r in recs],
                "best": "best.pt" if status == "done" else None,  # beside train.json: a moved folder still holds
                "epoch_records": recs, "versions": tool_versions("torch", "ultralytics"),
                "device_name": device_name(self.info["device"])}

    def write(self, status: str) -> dict:
        doc = self.snapshot(status)
        write_train_json(self.out, doc)
        return doc

    def on_epoch(self, trainer, rec) -> None:
        self.write("running")


def _copy_checkpoint(src, dst: Path) -> None:
    """Copy an Ultralytics checkpoint into our folder atomically, if it exists."""
    if Path(src).exists():
        with atomic_path(dst) as tmp:
            shutil.copy2(src, tmp)


def launches_ddp(device) -> bool:
    """True when Ultralytics will train on several GPUs through its DDP subprocesses ('0,1')."""
    return n_gpus(device) > 1


def _trainer_args(yaml_path: Path, out: Path, epochs: int, imgsz: int, batch: int, device, patience: int,
                  workers: int, pretrained: bool, gpus: int, overrides: dict) -> dict:
    """Ultralytics train arguments for a new run.

    DDP: Ultralytics' folder is out/ddp, because its launcher deletes that folder before starting the workers
    (out holds the data view the workers read, and train.json).
    """
    where = dict(project=str(out), name="ddp") if launches_ddp(device) else dict(project=str(out.parent), name=out.name)
    args = dict(data=str(yaml_path), epochs=epochs, imgsz=int(imgsz), batch=int(batch), device=str(device),
                patience=int(patience), workers=int(workers), **where, exist_ok=True,
                plots=False, pretrained=pretrained, val=True, verbose=True)
    if gpus == 0:
        args["amp"] = False  # the AMP check downloads weights; AMP is off on CPU anyway
    args.update(overrides)
    return args


def _resume_args(args: dict, local_last: Path, out: Path) -> dict:
    """The few arguments Ultralytics takes when resuming from (the checked copy of) out/last.pt."""
    keep = {k: args[k] for k in ("data", "device", "workers", "patience", "plots", "imgsz", "batch")}
    return {**keep, "resume": str(local_last), "save_dir": str(out)}


def _start_args(args: dict, local_model: Path, out: Path) -> dict:
    """Arguments for a new run from the checked copy of the weights or yaml; the run folder's old checkpoints go."""
    for stale in (out / "last.pt", out / "best.pt", out / "weights" / "last.pt", out / "weights" / "best.pt"):
        stale.unlink(missing_ok=True)
    return {**args, "model": str(local_model)}


def _build_trainer(args: dict, plan, record: _Record, callbacks: dict | None):
    """The Ultralytics trainer with the plan on it, the plan's callbacks and ours (DDP workers get both pickled)."""
    from .yolo import trainer_class

    out = record.out
    trainer = trainer_class()(overrides=args)
    trainer.plan = plan
    for event, fn in plan.callbacks().items():
        trainer.add_callback(event, fn)
    # after the plan has recorded the epoch (not at on_model_save, which Ultralytics runs before on_fit_epoch_end):
    # a crash between the two then leaves last.pt and train.json at the same epoch, so a resume loses no record
    trainer.add_callback("on_fit_epoch_end", lambda t: _keep_last(t, out))
    for event, fn in (callbacks or {}).items():
        for f in (fn if isinstance(fn, (list, tuple)) else [fn]):
            trainer.add_callback(event, f)
    return trainer


def _keep_last(trainer, out: Path) -> None:
    """Copy the epoch's last.pt into the run folder (rank 0 only: the other DDP ranks save nothing)."""
    if os.environ.get("RANK", "-1") in ("-1", "0") and Path(trainer.last).exists():
        _copy_checkpoint(trainer.last, out / "last.pt")


def _run_trainer(job: "Job"):
    """Train; on several GPUs take rank 0's epoch records and final metrics back. Returns the trainer."""
    from subprocess import CalledProcessError

    from . import ddp

    trainer, record = job.trainer, job.record
    try:
        trainer.train()
    except BaseException as e:
        if trainer.ddp:
            ddp.adopt_results(trainer, job.plan)  # the epochs rank 0 finished before the failure
        record.write("interrupted")
        if isinstance(e, CalledProcessError):
            raise EdgekitError(f"multi-GPU training on device {record.info['device']}: a DDP worker exited with "
                               f"code {e.returncode} (its output is above); {record.out / 'train.json'} keeps the "
                               f"finished epochs") from None
        raise
    finally:
        if job.ckpt_tmp is not None:
            job.ckpt_tmp.cleanup()
    if trainer.ddp:
        ddp.finished_results(trainer, job.plan)
    return trainer


def _finish(trainer, record: _Record) -> dict:
    """Keep best.pt and last.pt, drop Ultralytics' weights folder, write the final train.json."""
    out = record.out
    if not Path(trainer.best).exists():
        raise ArtifactError(f"{trainer.best}: Ultralytics wrote no best checkpoint")
    _copy_checkpoint(trainer.best, out / "best.pt")
    _copy_checkpoint(trainer.last, out / "last.pt")
    shutil.rmtree(Path(trainer.wdir), ignore_errors=True)
    doc = record.snapshot("done")
    m = trainer.metrics or {}  # final_eval of best.pt
    if "metrics/mAP50-95(B)" in m:
        doc["map50"], doc["map50_95"] = float(m["metrics/mAP50(B)"]), float(m["metrics/mAP50-95(B)"])
    write_train_json(out, doc)
    return doc


@dataclass
class Job:
    """One run, ready to train: the Ultralytics trainer carrying the plan and its callbacks, and its train.json."""

    trainer: object
    plan: object
    record: _Record
    ckpt_tmp: object
    log: object


def train(weights_or_arch, data, strategy=None, epochs: int = 100, imgsz: int = 640, batch: int = 16,
          device="cpu", out_dir="runs/train", patience: int = 50, resume: bool = False,
          gpu_hour_usd: float = 2.0, cpu_hour_usd: float = 0.0, workers: int = 0, backbone_lr_mult: float = 1.0,
          log=print, callbacks: dict | None = None, skip_bad: bool = False, trust_checkpoint: bool = False,
          **overrides) -> dict:
    """Train one strategy with Ultralytics; returns the train.json dict (also written to out_dir/train.json).

    data: a data.yaml path or a loaded edgekit Dataset.
    strategy: see edgekit.train.strategy (None: 'full', or the recorded one when resuming).
    device: 'cpu', '0', or several GPUs '0,1' (Ultralytics DDP; the strategy reaches its workers, edgekit.train.ddp).
    resume: continue from out_dir/last.pt with the same strategy; the schedule state follows from the epoch.
    callbacks: extra Ultralytics callbacks {event: fn(trainer)}; overrides: extra Ultralytics train arguments.
    trust_checkpoint: hand the .pt to Ultralytics unchecked (default: a private copy that passed edgekit.checkpoint).
    skip_bad: report bad samples (log and train.json "skipped") and train without them, instead of stopping.
    The dataset is validated before training and never written to: Ultralytics works on a view in out_dir/.data.
    """
    job = prepare(weights_or_arch, data, strategy, epochs=epochs, imgsz=imgsz, batch=batch, device=device,
                  out_dir=out_dir, patience=patience, resume=resume, gpu_hour_usd=gpu_hour_usd,
                  cpu_hour_usd=cpu_hour_usd, workers=workers, backbone_lr_mult=backbone_lr_mult, log=log,
                  callbacks=callbacks, skip_bad=skip_bad, trust_checkpoint=trust_checkpoint, **overrides)
    if isinstance(job, dict):
        return job
    doc = _finish(_run_trainer(job), job.record)
    log(f"edgekit: {doc['resolved_strategy']}: mAP50 {_metric(doc['map50'])}  mAP50-95 {_metric(doc['map50_95'])}  "
        f"{doc['epochs']} epochs in {doc['wall_s']:.0f}s -> {job.record.out / 'best.pt'}")
    return doc


def _metric(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def prepare(weights_or_arch, data, strategy=None, epochs: int = 100, imgsz: int = 640, batch: int = 16,
            device="cpu", out_dir="runs/train", patience: int = 50, resume: bool = False,
            gpu_hour_usd: float = 2.0, cpu_hour_usd: float = 0.0, workers: int = 0, backbone_lr_mult: float = 1.0,
            log=print, callbacks: dict | None = None, skip_bad: bool = False, trust_checkpoint: bool = False,
            **overrides) -> "Job | dict":
    """What train() does before Ultralytics trains (same arguments): a Job, or the train.json of a finished run."""
    from .._ultralytics import ultralytics
    from .yolo import Plan

    out = Path(out_dir).resolve()
    check_outputs(out_dir, train_inputs(weights_or_arch, data, resume))  # before anything is read or written
    prev, strategy = _previous_run(out, strategy, resume, log)
    if prev.get("status") == "done":
        log(f"edgekit: {out / 'train.json'} says this run finished; nothing to resume")
        return prev
    requested = parse_strategy(strategy if strategy is not None else "full")
    ultralytics()
    weights_init = prev.get("weights_init", str(weights_or_arch)) if resume else str(weights_or_arch)
    src, name, pretrained = _resolve_model(weights_init if resume else weights_or_arch, requested)
    # Ultralytics gets private copies that passed edgekit.checkpoint: what it loads is what was checked
    ckpt_tmp = private_tempdir("train")
    try:
        local = checked_copy(out / "last.pt" if resume else src, ckpt_tmp.name, trust=trust_checkpoint,
                             name=None if resume else name)
        out.mkdir(parents=True, exist_ok=True)
        yaml_path, ds = _data_yaml(data, out, skip_bad, log)
        epochs = int(prev.get("epochs_requested", epochs)) if resume else int(epochs)
        resolved, reasons = _resolve_strategy(requested, epochs, ds, pretrained, prev, log)
        if not pretrained and resolved.kind not in ("scratch",):
            log(f"edgekit: warning: '{weights_or_arch}' has no pretrained weights; '{resolved.spec}' starts from "
                f"random init")

        plan = Plan(resolved, backbone_lr_mult, log=log, records=prev.get("epoch_records") if resume else None)
        gpus = n_gpus(device)
        data_path = Path(ds.source if hasattr(data, "source") else data)
        info = {
            "strategy": requested.spec, "resolved_strategy": resolved.spec, "status": "running",
            "weights_init": weights_init, "pretrained": pretrained,
            "data": str(data_path.resolve()),
            "imgsz": int(imgsz), "batch": int(batch), "epochs_requested": epochs, "device": str(device),
            "n_gpus": gpus,
            "backbone_lr_mult": backbone_lr_mult, "reasons": reasons, "skipped": list(ds.skipped),
        }
        record = _Record(out, info, plan, prev, gpus, gpu_hour_usd, cpu_hour_usd)
        plan.on_epoch = record.on_epoch
        args = _trainer_args(yaml_path, out, epochs, imgsz, batch, device, patience, workers, pretrained, gpus,
                             overrides)
        if resume:
            args = _resume_args(args, local, out)
            log(f"edgekit: resuming {out} from last.pt (strategy {resolved.spec})")
        else:
            args = _start_args(args, local, out)
            log(f"edgekit: training {Path(str(weights_or_arch)).name} on {data_path.name} with strategy "
                f"{resolved.spec} for {epochs} epochs at imgsz {imgsz} on {device}")
        trainer = _build_trainer(args, plan, record, callbacks)
    except BaseException:
        ckpt_tmp.cleanup()
        raise
    return Job(trainer, plan, record, ckpt_tmp, log)


def _schedule(prior: list, applied: list) -> list:
    """Stages as applied across resumes: earlier entries before the resumed epoch, then this run's."""
    if not applied:
        return prior
    keep = [s for s in prior if s["epoch"] < applied[0]["epoch"]]
    if keep and keep[-1]["frozen_modules"] == applied[0]["frozen_modules"]:
        applied = applied[1:]
    return keep + applied
