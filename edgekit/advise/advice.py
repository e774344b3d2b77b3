"""`advise`: is training from scratch worth it here, and which fine-tuning strategies to try."""
from __future__ import annotations

import numpy as np

from ..data import Dataset, load_dataset
from ..data.profile import profile
from .axes import box_fractions, domain_decided_by, suggest_imgsz, suggest_models
from .rule import LARGE, SMALL, box_sizes, choose, domain_verdict

SCRATCH_MIN_IMAGES = 200_000
# Training-cost model (documented assumptions): a YOLOv8n-class model trains at ~250 images/s at 640 px on one
# current data-centre GPU; scratch needs ~300 epochs, fine-tuning ~50 (Ultralytics' defaults and common practice).
GPU_IMAGES_PER_S_640 = 250.0
SCRATCH_EPOCHS, FINETUNE_EPOCHS = 300, 50
SWEEP_EPOCHS = 3  # train-export's default: the epochs the first suggestion's schedule is laid out for


def gpu_hours(images: int, epochs: int, imgsz: int = 640) -> float:
    return images * epochs / (GPU_IMAGES_PER_S_640 * (640 / imgsz) ** 2) / 3600


def advise(data, budget_usd: float | None = None, deadline_days: float | None = None, target: str = "cpu",
           gpu_hour_usd: float = 2.0, imgsz: int = 640, sample: int = 128, log=print,
           epochs: int = SWEEP_EPOCHS) -> dict:
    """Profile the dataset, measure its distance from COCO, and suggest strategies (the first is what auto picks)."""
    ds = data if isinstance(data, Dataset) else load_dataset(data)
    prof = profile(ds)
    n_train = prof["splits"].get("train", {}).get("images", 0)
    log(f"embedding up to {sample} train images with the COCO YOLOv8n backbone ...")
    dom = domain_verdict(ds, sample)
    overlap = dom["class_name_overlap_coco"]
    far, near = dom["closeness"] == "far", dom["closeness"] == "near"
    scratch_h, ft_h = gpu_hours(n_train, SCRATCH_EPOCHS, imgsz), gpu_hours(n_train, FINETUNE_EPOCHS, imgsz)
    scratch_usd, ft_usd = scratch_h * gpu_hour_usd, ft_h * gpu_hour_usd
    reasons = []
    big = n_train >= SCRATCH_MIN_IMAGES
    affordable = budget_usd is None or scratch_usd <= budget_usd
    in_time = deadline_days is None or scratch_h / 24 <= deadline_days
    scratch_ok = far and big and affordable and in_time
    reasons.append(f"domain distance to COCO: Fréchet {dom['frechet_distance']:.1f} ({dom['band']}; thresholds "
                   f"{dom['thresholds']['near']:g}/{dom['thresholds']['far']:g}), {overlap:.0%} of class names are "
                   f"COCO classes, class/box distance {dom['class_box_distance']:.2f}"
                   f" -> {'far from' if far else 'close to' if near else 'moderately far from'} the pretraining domain")
    reasons.append(f"{n_train} train images ({'>=' if big else '<'} {SCRATCH_MIN_IMAGES:,} needed before scratch can "
                   f"catch up with pretrained features)")
    reasons.append(f"estimated one-GPU cost at {imgsz}px: scratch {SCRATCH_EPOCHS} epochs ~{scratch_h:.1f} GPU-h "
                   f"(${scratch_usd:,.0f}), fine-tune {FINETUNE_EPOCHS} epochs ~{ft_h:.2f} GPU-h (${ft_usd:,.0f})"
                   + (f"; budget ${budget_usd:,.0f}" if budget_usd is not None else "")
                   + (f"; deadline {deadline_days:g} days" if deadline_days is not None else ""))
    small = n_train < 1000
    if scratch_ok:
        strategies = ["scratch", "full", "schedule:0:backbone,10:none"]
        verdict = "Training from scratch could pay off: the domain is far, the data are large and budget and deadline allow."
    else:
        why = [w for w, bad in ((f"the domain is {'close to' if near else 'not far from'} COCO", not far), (f"the data are small ({n_train} images)", not big),
                                ("the budget does not cover it", not affordable), ("the deadline is too short", not in_time)) if bad]
        verdict = "Do not train from scratch: " + ", ".join(why) + ". Fine-tune the COCO weights."
        if near and small:
            strategies = ["head", "freeze:10", "schedule:0:backbone,2:none"]
        elif near:
            strategies = ["schedule:0:backbone,3:none", "full", "freeze:10"]
        elif far and small:
            strategies = ["schedule:0:backbone,1:none", "full", "freeze:4"]
        else:
            strategies = ["full", "schedule:0:backbone,2:none", "freeze:4"]
        pick, why_pick = choose(n_train, dom["closeness"], epochs)  # the same rule as --strategy auto
        strategies = [pick] + [s for s in strategies if s != pick] + ["scratch"]  # scratch: the measured reference
        reasons.append(f"first suggestion (what --strategy auto picks at {epochs} epochs): " + "; ".join(why_pick))
        reasons.append("freeze depth: " + ("deep (backbone frozen first) since pretrained features transfer well" if near
                                           else "shallow (unfreeze early) since the features must adapt to the new domain"
                                           if far else "medium: freeze the early layers, let the rest adapt"))
    fr, native = box_fractions(ds)
    sizes, tile, size_why = suggest_imgsz(fr, native)
    models = suggest_models(target)
    reasons.append("input sizes: " + "; ".join(size_why) + f" -> try {','.join(map(str, sizes))}")
    med = float(np.median(box_sizes(ds))) if len(box_sizes(ds)) else 0.14
    decided = domain_decided_by(dom, 0.25 if med < SMALL or med > LARGE else 0.0)
    if decided != "frechet":
        reasons.append(f"the Fréchet distance fell in the middle band, so the {decided} decided '{dom['closeness']}': "
                       f"{overlap:.0%} of the class names are COCO's, but a shared name (an aerial-view 'car') need "
                       f"not look like COCO's; weigh this")
    args = f"--strategies {','.join(strategies)} --imgsz {','.join(map(str, sizes))} --models {','.join(models)}"
    return {"data": str(ds.source), "profile": prof, "domain": dom, "scratch_worth_it": scratch_ok, "verdict": verdict,
            "strategies": strategies, "imgsz": sizes, "tiling": tile, "models": models, "domain_decided_by": decided,
            "train_export_args": args, "reasons": reasons,
            "estimates": {"scratch_gpu_hours": round(scratch_h, 3), "finetune_gpu_hours": round(ft_h, 3),
                          "scratch_usd": round(scratch_usd, 2), "finetune_usd": round(ft_usd, 2), "gpu_hour_usd": gpu_hour_usd},
            "target": target}
