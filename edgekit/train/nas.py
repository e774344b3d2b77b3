"""YOLO-NAS S route (super-gradients): the same strategies on its backbone/neck/heads, ONNX into edgekit's runtime.

super-gradients 3.7.1 pins numpy<=1.23, onnx 1.15, protobuf 3.20 ... that cannot live beside this stack, so it
is installed with --no-deps plus the dependencies it really imports: see docker/install_nas.sh. YOLO-NAS
pretrained weights are not downloadable from here and are licensed for non-commercial use only: pass your own
checkpoint (`weights=`) or train from scratch.

The loop is small on purpose: letterboxed images (edgekit's preprocessing), horizontal flips, PPYoloELoss,
AdamW, linear warm-up then linear decay; frozen groups get requires_grad=False and their BatchNorms eval mode
each epoch. best.pt is the final epoch (state_dict + meta); mAP is measured after export, through the runtime
that will serve the model (edgekit.eval.evaluate on the ONNX).
"""
from __future__ import annotations

import os
import random
import time
from pathlib import Path

import numpy as np

from .._imports import MissingDependency, require
from ..errors import ArtifactError
from ..io import atomic_path
from .freeze import freeze_bn, set_frozen
from .record import cost, device_name, n_gpus, write_train_json
from .strategy import GROUPS, parse_strategy

INSTALL = "bash docker/install_nas.sh (super-gradients 3.7.1 --no-deps plus its real dependencies)"
NAS_GROUPS = {"backbone": "backbone", "neck": "neck", "head": "heads"}


def super_gradients():
    """Import super_gradients or say how to install it; its logs go to the temp folder, not ~/sg_logs."""
    import os
    import sys
    import tempfile

    if "super_gradients" in sys.modules:
        return sys.modules["super_gradients"]
    # its documented switches: no crash handler (an excepthook), no log upload; it has no log-folder variable and
    # writes ~/sg_logs at import (console.log, logs_*.log), so HOME points to a temp folder while it is imported
    os.environ.setdefault("CRASH_HANDLER", "FALSE")
    os.environ.setdefault("UPLOAD_LOGS", "FALSE")
    home = os.environ.get("HOME")
    os.environ["HOME"] = os.path.join(tempfile.gettempdir(), "edgekit-super-gradients")
    try:
        return require("super_gradients", "YOLO-NAS")
    except MissingDependency as e:
        raise MissingDependency(f"super_gradients is not importable (needed for YOLO-NAS): {INSTALL}") from e
    finally:
        if home is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = home


def build(nc: int, weights=None, arch: str = "yolo_nas_s", trust_checkpoint: bool = False):
    """A YOLO-NAS model with nc classes, from a user checkpoint (edgekit best.pt or super-gradients ckpt) or random.

    The checkpoint is loaded with edgekit's restricted unpickler unless `trust_checkpoint`.
    """
    super_gradients()
    from super_gradients.training import models

    from ..checkpoint import load_checkpoint

    model = models.get(arch, num_classes=nc)
    if weights:
        ckpt = load_checkpoint(weights, trust=trust_checkpoint)
        if not isinstance(ckpt, dict):
            raise ArtifactError(f"{weights}: expected a checkpoint dict with a state_dict, got {type(ckpt).__name__}")
        sd = ckpt.get("state_dict") or ckpt.get("net") or ckpt.get("ema_net") or ckpt
        own = model.state_dict()
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
        sd = {k: v for k, v in sd.items() if k in own and v.shape == own[k].shape}
        model.load_state_dict(sd, strict=False)
        if not sd:
            raise ArtifactError(f"{weights}: no tensor matches {arch}")
    return model


def nas_groups(model) -> dict:
    """{'backbone': module, 'neck': module, 'head': module} of a YOLO-NAS model."""
    return {g: getattr(model, a) for g, a in NAS_GROUPS.items()}


def frozen_modules(model, freeze) -> list:
    """Modules frozen by a stage target ('none', group name with the groups before it, or N first backbone blocks)."""
    groups = nas_groups(model)
    if freeze in (None, "none", 0):
        return []
    if isinstance(freeze, int):
        return list(groups["backbone"].children())[:freeze]
    return [groups[g] for g in GROUPS[: GROUPS.index(freeze) + 1]]


def _load(sample, imgsz: int, flip: bool):
    import cv2

    from ..runtime.preprocess import letterbox

    img = cv2.imread(str(sample.image))
    h, w = img.shape[:2]
    img, lb = letterbox(img, (imgsz, imgsz))
    b = sample.boxes.astype(np.float32).copy()
    t = np.zeros((len(b), 5), np.float32)
    t[:, 0] = sample.classes
    t[:, 1] = b[:, 0] * w * lb.gain + lb.pad_left
    t[:, 2] = b[:, 1] * h * lb.gain + lb.pad_top
    t[:, 3], t[:, 4] = b[:, 2] * w * lb.gain, b[:, 3] * h * lb.gain
    if flip:
        img = img[:, ::-1]
        t[:, 1] = imgsz - t[:, 1]
    return np.ascontiguousarray(img[..., ::-1].transpose(2, 0, 1)), t


def _batches(samples, imgsz: int, batch: int, train: bool):
    import torch

    order = list(range(len(samples)))
    if train:
        random.shuffle(order)
    for s in range(0, len(order), batch):
        ims, tg = [], []
        for j, k in enumerate(order[s:s + batch]):
            im, t = _load(samples[k], imgsz, train and random.random() < 0.5)
            ims.append(im)
            tg.append(np.concatenate([np.full((len(t), 1), j, np.float32), t], 1))
        yield torch.from_numpy(np.stack(ims)).float() / 255, torch.from_numpy(np.concatenate(tg))


def train_nas(weights, data, strategy="full", epochs: int = 10, imgsz: int = 320, batch: int = 8, device="cpu",
              out_dir="runs/nas", lr: float = 2e-4, gpu_hour_usd: float = 2.0, log=print, export: bool = True,
              trust_checkpoint: bool = False) -> dict:
    """Train YOLO-NAS S with an edgekit strategy; writes out_dir/best.pt, model.onnx + model.json, train.json."""
    import torch

    from ..data.dataset import Dataset, load_dataset
    from .lora import apply_lora, merge_lora

    ds = data if isinstance(data, Dataset) else load_dataset(data)
    s = parse_strategy(strategy).resolve(epochs)
    if s.kind == "auto":
        from .auto import auto_strategy

        s, _ = auto_strategy(ds, epochs, pretrained=bool(weights))
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    random.seed(0)
    model = build(ds.nc, weights if s.pretrained else None, trust_checkpoint=trust_checkpoint).to(device)
    if s.kind == "lora":
        apply_lora(model.backbone, None, s.lora_rank, s.lora_alpha)
    from super_gradients.training.losses import PPYoloELoss

    loss_fn = PPYoloELoss(num_classes=ds.nc, reg_max=16, use_static_assigner=False)
    opt = torch.optim.AdamW([p for p in model.parameters()], lr=lr, weight_decay=1e-4)
    train_s = ds.samples("train")
    nb = (len(train_s) + batch - 1) // batch
    total, warm = epochs * nb, min(nb, 100)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min((i + 1) / warm, 1.0) * max(1 - i / total, 0.05))
    t_start, records, applied, prev = time.time(), [], [], None
    for epoch in range(epochs):
        t0 = time.time()
        model.train()
        mods = frozen_modules(model, s.stage_at(epoch).freeze)
        n_train = set_frozen(model, mods)
        freeze_bn(model, mods)
        names = [g for g, m in nas_groups(model).items() if any(m is x for x in mods)]
        if names != prev:
            applied.append({"epoch": epoch, "frozen_groups": names, "trainable_params": n_train})
            prev = names
        tot = 0.0
        for x, t in _batches(train_s, imgsz, batch, True):
            loss = loss_fn(model(x.to(device)), t.to(device))
            loss = loss[0] if isinstance(loss, tuple) else loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            sched.step()
            tot += float(loss)
        rec = {"epoch": epoch + 1, "loss": tot / nb, "trainable_params": n_train, "train_s": round(time.time() - t0, 3),
               "frozen_groups": names}
        records.append(rec)
        log(f"edgekit: nas epoch {epoch + 1}/{epochs}  loss {rec['loss']:.4g}  trainable {n_train:,}  "
            f"{rec['train_s']:.1f}s")
    model.eval()
    if s.kind == "lora":
        merge_lora(model)
    best = out / "best.pt"
    with atomic_path(best) as tmp:
        torch.save({"state_dict": model.state_dict(), "arch": "yolo_nas_s", "names": ds.names, "imgsz": imgsz,
                    "strategy": s.spec}, tmp)
    info = {"strategy": parse_strategy(strategy).spec, "resolved_strategy": s.spec, "status": "done",
            "arch": "yolo_nas_s", "schedule": applied, "epochs": len(records), "device": str(device),
            "device_name": device_name(device), **cost(time.time() - t_start, n_gpus(device), gpu_hour_usd),
            "map50": None, "map50_95": None,
            "trainable_params": [r["trainable_params"] for r in records], "epoch_s": [r["train_s"] for r in records],
            "best": os.path.relpath(best, out), "weights_init": str(weights) if weights else None, "data": str(ds.source),
            "imgsz": imgsz, "reasons": [], "epoch_records": records}
    if export:
        onnx_path = export_nas_onnx(best, out, imgsz=imgsz, log=log)
        from ..eval import evaluate

        res = evaluate(onnx_path, ds, progress=False)
        info.update(map50=res["map50"], map50_95=res["map50_95"], onnx=str(onnx_path))
    write_train_json(out, info)
    return info


class _Flat:
    """Wrap YOLO-NAS so ONNX has one output (B, N, 4 + nc): xyxy input pixels, then class scores."""

    @staticmethod
    def wrap(model):
        import torch

        class Flat(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, x):
                y = self.m(x)
                boxes, scores = y[0] if isinstance(y[0], (tuple, list)) else y
                return torch.cat([boxes, scores], -1)

        return Flat(model).eval()


def export_nas_onnx(weights, out_dir, imgsz: int = 640, opset: int = 17, log=print,
                    trust_checkpoint: bool = False) -> Path:
    """edgekit YOLO-NAS best.pt -> out_dir/model.onnx + model.json (layout 'nas')."""
    import torch

    from .._imports import tool_versions
    from ..checkpoint import load_checkpoint
    from ..io import sha256_file
    from ..export.sidecar import onnx_sidecar
    from ..runtime.meta import write_sidecar

    onnx = require("onnx", "ONNX export")
    ckpt = load_checkpoint(weights, trust=trust_checkpoint)
    if not (isinstance(ckpt, dict) and "names" in ckpt and "state_dict" in ckpt):
        raise ArtifactError(f"{weights}: not an edgekit YOLO-NAS best.pt (expected keys 'names' and 'state_dict')")
    names = ckpt["names"]
    model = build(len(names))
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    if hasattr(model, "prep_model_for_conversion"):
        model.prep_model_for_conversion(input_size=(1, 3, imgsz, imgsz))
    flat = _Flat.wrap(model)
    x = torch.zeros(1, 3, imgsz, imgsz)
    target = Path(out_dir) / "model.onnx"
    with atomic_path(target) as tmp, torch.no_grad():
        kw = {"dynamo": False} if "dynamo" in torch.onnx.export.__code__.co_varnames else {}
        torch.onnx.export(flat, x, str(tmp), opset_version=opset, input_names=["images"], output_names=["output0"],
                          **kw)
        onnx.checker.check_model(onnx.load(str(tmp)))
    shape = [d.dim_value for d in onnx.load(str(target)).graph.output[0].type.tensor_type.shape.dim]
    doc = onnx_sidecar(target, arch="yolo_nas_s", family="yolo_nas", names=names, imgsz=(imgsz, imgsz), stride=32,
                       input_name="images", output_name="output0", layout="nas", output_shape=shape, opset=opset,
                       dynamic=False, source=weights, source_sha256=sha256_file(weights),
                       versions=tool_versions("torch", "super_gradients", "onnx"),
                       license_note="YOLO-NAS architecture and pretrained weights: Deci AI license, "
                                    "non-commercial use")
    write_sidecar(target, doc)
    log(f"wrote {target} ({doc['size_mb']} MB, output {shape}, layout nas)")
    return target
