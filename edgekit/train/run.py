"""`train()`: one strategy, one Ultralytics run, out_dir/best.pt + out_dir/train.json (atomic)."""
from __future__ import annotations

import json
import os
import platform
import shutil
import time
from pathlib import Path

from ..errors import ArtifactError, DataError, EdgekitError
from .._imports import tool_versions
from ..checkpoint import check_checkpoint, checked_copy
from ..io import atomic_path, atomic_write_json, private_tempdir
from .strategy import parse_strategy

BUNDLED = Path(__file__).resolve().parent.parent / "assets" / "yolov8n_coco.pt"


def _n_gpus(device) -> int:
    d = str(device if device is not None else "").strip().lower()
    if d in ("cpu", "mps") or d.startswith(("cpu", "mps")):
        return 0
    ids = [x for x in d.replace("cuda:", "").split(",") if x.strip()]
    if ids:
        return len(ids)
    try:
        import torch

        return 1 if torch.cuda.is_available() else 0
    except ImportError:
        return 0


def _resolve_model(weights_or_arch, strategy) -> tuple[str, bool]:
    """(path or yaml name for Ultralytics, has pretrained weights)."""
    w = str(weights_or_arch)
    p = Path(w)
    if p.suffix.lower() in (".yaml", ".yml"):
        if not p.exists():
            from ultralytics.nn.tasks import yaml_model_load

            try:
                yaml_model_load(w)  # yolov8n.yaml -> the package's yolov8.yaml at scale n
            except Exception:
                raise ArtifactError(f"{w}: architecture yaml not found (neither a file nor an Ultralytics model "
                                    f"yaml such as yolov8n.yaml, yolo11n.yaml)") from None
        return w, False
    if p.suffix.lower() != ".pt":
        raise ArtifactError(f"{w}: expected Ultralytics weights (.pt) or an architecture yaml (e.g. yolov8n.yaml)")
    if not p.exists():
        raise ArtifactError(f"{w}: weights file not found (edgekit never downloads weights; "
                            f"bundled COCO YOLOv8n: {BUNDLED})")
    return str(p.resolve()), strategy.kind != "scratch"


def _data_yaml(data, out_dir: Path, skip_bad: bool, log) -> tuple[Path, object]:
    """Validate the train and val samples as eval does, then write the view Ultralytics trains on (out_dir/.data)."""
    from ..data.dataset import load_dataset

    ds = load_dataset(data, skip_bad=skip_bad)
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


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def train(weights_or_arch, data, strategy=None, epochs: int = 100, imgsz: int = 640, batch: int = 16,
          device="cpu", out_dir="runs/train", patience: int = 50, resume: bool = False,
          gpu_hour_usd: float = 2.0, cpu_hour_usd: float = 0.0, workers: int = 0, backbone_lr_mult: float = 1.0,
          log=print, callbacks: dict | None = None, skip_bad: bool = False, trust_checkpoint: bool = False,
          **overrides) -> dict:
    """Train one strategy with Ultralytics; returns the train.json dict (also written to out_dir/train.json).

    strategy: see edgekit.train.strategy (None: 'full', or the recorded one when resuming).
    resume: continue from out_dir/last.pt with the same strategy; the schedule state follows from the epoch.
    callbacks: extra Ultralytics callbacks {event: fn(trainer)}; overrides: extra Ultralytics train arguments.
    trust_checkpoint: hand the .pt to Ultralytics unchecked (default: a private copy that passed edgekit.checkpoint).
    skip_bad: report bad samples (log and train.json "skipped") and train without them, instead of stopping.
    The dataset is validated before training and never written to: Ultralytics works on a view in out_dir/.data.
    """
    from .._ultralytics import ultralytics

    out = Path(out_dir).resolve()
    json_path, last = out / "train.json", out / "last.pt"
    prev = _read_json(json_path) if resume else {}
    if resume:
        if prev.get("status") == "done":
            log(f"edgekit: {json_path} says this run finished; nothing to resume")
            return prev
        if not last.exists():
            raise ArtifactError(f"{last}: nothing to resume (no checkpoint from an earlier run in {out})")
        if strategy is not None and prev and parse_strategy(strategy).spec not in (
                prev.get("resolved_strategy"), parse_strategy(prev.get("strategy", "full")).spec):
            raise EdgekitError(f"--resume: {out} was trained with strategy '{prev.get('strategy')}', "
                               f"not '{strategy}'; resume with the same strategy or start a new run")
        strategy = strategy if strategy is not None else prev.get("strategy", "full")
    requested = parse_strategy(strategy if strategy is not None else "full")
    ultralytics()
    model, pretrained = _resolve_model(prev.get("weights_init", weights_or_arch) if resume else weights_or_arch,
                                       requested)
    out.mkdir(parents=True, exist_ok=True)
    yaml_path, ds = _data_yaml(data, out, skip_bad, log)
    epochs = int(prev.get("epochs_requested", epochs)) if resume else int(epochs)

    reasons = list(prev.get("reasons", [])) if resume else []
    resolved = requested.resolve(epochs)  # the bare 'schedule' depends on the epoch count
    if requested.kind == "auto":
        if resume and prev.get("resolved_strategy"):
            resolved = parse_strategy(prev["resolved_strategy"])
        else:
            from .auto import auto_strategy

            resolved, reasons = auto_strategy(ds, epochs, pretrained)
        for r in reasons:
            log(f"edgekit: auto: {r}")
    if not pretrained and resolved.kind not in ("scratch",):
        log(f"edgekit: warning: '{weights_or_arch}' has no pretrained weights; '{resolved.spec}' starts from random init")

    from .yolo import Plan, trainer_class

    plan = Plan(resolved, backbone_lr_mult, log=log, records=prev.get("epoch_records") if resume else None)
    n_gpus = _n_gpus(device)
    info = {
        "strategy": requested.spec, "resolved_strategy": resolved.spec, "status": "running",
        "weights_init": str(weights_or_arch) if not resume else prev.get("weights_init", str(weights_or_arch)),
        "pretrained": pretrained, "data": str(Path(data).resolve()), "imgsz": int(imgsz), "batch": int(batch),
        "epochs_requested": epochs, "device": str(device), "n_gpus": n_gpus, "backbone_lr_mult": backbone_lr_mult,
        "reasons": reasons, "skipped": list(ds.skipped),
    }
    wall_before = float(prev.get("wall_s", 0.0)) if resume else 0.0
    t_start = time.time()

    def snapshot(status: str, trainer=None) -> dict:
        recs = [plan.records[e] for e in sorted(plan.records) if "map50_95" in plan.records[e]]
        wall = wall_before + time.time() - t_start
        hours = wall / 3600
        gpu_h, cpu_h = hours * n_gpus, (hours if n_gpus == 0 else 0.0)
        best = max(recs, key=lambda r: (r["map50_95"] * 0.9 + r["map50"] * 0.1), default=None)
        doc = {**info, "status": status, "epochs": len(recs),
               "schedule": _schedule(prev.get("schedule", []) if resume else [], plan.applied),
               "wall_s": round(wall, 2), "gpu_hours": round(gpu_h, 6), "cpu_hours": round(cpu_h, 6),
               "gpu_hour_usd": gpu_hour_usd, "cpu_hour_usd": cpu_hour_usd,
               "cost_usd": round(gpu_h * gpu_hour_usd + cpu_h * cpu_hour_usd, 4),
               "map50": best["map50"] if best else None, "map50_95": best["map50_95"] if best else None,
               "best_epoch": best["epoch"] if best else None,
               "trainable_params": [r["trainable_params"] for r in recs],
               "epoch_s": [r["train_s"] for r in recs], "epoch_total_s": [r["epoch_s"] for r in recs],
               "best": str(out / "best.pt") if status == "done" else None,
               "epoch_records": recs, "versions": tool_versions("torch", "ultralytics")}
        doc["device_name"] = _device_name(device)
        return doc

    def on_epoch(trainer, rec):
        atomic_write_json(json_path, snapshot("running", trainer))

    def on_model_save(trainer):
        if Path(trainer.last).exists():
            with atomic_path(last) as tmp:
                shutil.copy2(trainer.last, tmp)

    plan.on_epoch = on_epoch
    ckpt_tmp = None
    args = dict(data=str(yaml_path), epochs=epochs, imgsz=int(imgsz), batch=int(batch), device=str(device),
                patience=int(patience), workers=int(workers), project=str(out.parent), name=out.name, exist_ok=True,
                plots=False, pretrained=pretrained, val=True, verbose=True)
    if n_gpus == 0:
        args["amp"] = False  # the AMP check downloads weights; AMP is off on CPU anyway
    args.update(overrides)
    if resume:
        args = {k: args[k] for k in ("data", "device", "workers", "patience", "plots", "imgsz", "batch")}
        args.update(resume=str(last), save_dir=str(out))
        check_checkpoint(last, trust=trust_checkpoint)
        log(f"edgekit: resuming {out} from {last.name} (strategy {resolved.spec})")
    else:
        args["model"] = model
        if model.endswith(".pt") and not trust_checkpoint:  # Ultralytics unpickles fully: give it a checked copy
            ckpt_tmp = private_tempdir("train")
            args["model"] = str(checked_copy(model, ckpt_tmp.name))
        for stale in (last, out / "best.pt", out / "weights" / "last.pt", out / "weights" / "best.pt"):
            stale.unlink(missing_ok=True)
        log(f"edgekit: training {Path(str(weights_or_arch)).name} on {Path(str(data)).name} with strategy "
            f"{resolved.spec} for {epochs} epochs at imgsz {imgsz} on {device}")

    Trainer = trainer_class()
    trainer = Trainer(overrides=args)
    trainer.plan = plan
    for event, fn in {**plan.callbacks(), "on_model_save": on_model_save}.items():
        trainer.add_callback(event, fn)
    for event, fn in (callbacks or {}).items():
        for f in (fn if isinstance(fn, (list, tuple)) else [fn]):
            trainer.add_callback(event, f)
    try:
        trainer.train()
    except BaseException:
        atomic_write_json(json_path, snapshot("interrupted"))
        raise
    finally:
        if ckpt_tmp is not None:
            ckpt_tmp.cleanup()
    if not Path(trainer.best).exists():
        raise ArtifactError(f"{trainer.best}: Ultralytics wrote no best checkpoint")
    with atomic_path(out / "best.pt") as tmp:
        shutil.copy2(trainer.best, tmp)
    if Path(trainer.last).exists():
        with atomic_path(last) as tmp:
            shutil.copy2(trainer.last, tmp)
    shutil.rmtree(Path(trainer.wdir), ignore_errors=True)
    doc = snapshot("done", trainer)
    m = trainer.metrics or {}  # final_eval of best.pt
    if "metrics/mAP50-95(B)" in m:
        doc["map50"], doc["map50_95"] = float(m["metrics/mAP50(B)"]), float(m["metrics/mAP50-95(B)"])
    atomic_write_json(json_path, doc)
    log(f"edgekit: {resolved.spec}: mAP50 {doc['map50']:.4f}  mAP50-95 {doc['map50_95']:.4f}  "
        f"{doc['epochs']} epochs in {doc['wall_s']:.0f}s -> {out / 'best.pt'}")
    return doc


def _schedule(prior: list, applied: list) -> list:
    """Stages as applied across resumes: earlier entries before the resumed epoch, then this run's."""
    if not applied:
        return prior
    keep = [s for s in prior if s["epoch"] < applied[0]["epoch"]]
    if keep and keep[-1]["frozen_modules"] == applied[0]["frozen_modules"]:
        applied = applied[1:]
    return keep + applied


def _device_name(device) -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(int(str(device).replace("cuda:", "").split(",")[0] or 0))
    except Exception:
        pass
    return platform.processor() or platform.machine() or os.uname().machine
