"""`advise`: is training from scratch worth it here, and which fine-tuning strategies to try."""
from __future__ import annotations

import random

from .data import load_dataset
from .data.coco_names import coco_overlap
from .data.domain import domain_distance
from .data.profile import profile

SCRATCH_MIN_IMAGES = 200_000
# Training-cost model (documented assumptions): a YOLOv8n-class model trains at ~250 images/s at 640 px on one
# current data-centre GPU; scratch needs ~300 epochs, fine-tuning ~50 (Ultralytics' defaults and common practice).
GPU_IMAGES_PER_S_640 = 250.0
SCRATCH_EPOCHS, FINETUNE_EPOCHS = 300, 50


def gpu_hours(images: int, epochs: int, imgsz: int = 640) -> float:
    return images * epochs / (GPU_IMAGES_PER_S_640 * (640 / imgsz) ** 2) / 3600


def advise(data, budget_usd: float | None = None, deadline_days: float | None = None, target: str = "cpu",
           gpu_hour_usd: float = 2.0, imgsz: int = 640, sample: int = 128, log=print) -> dict:
    ds = load_dataset(data)
    prof = profile(ds)
    n_train = prof["splits"].get("train", {}).get("images", 0)
    train = ds.samples("train")
    imgs = [s.image for s in random.Random(0).sample(train, min(sample, len(train)))]
    log(f"embedding {len(imgs)} train images with the COCO YOLOv8n backbone ...")
    dom = domain_distance(imgs)
    overlap = coco_overlap(ds.names)
    dom["class_name_overlap_coco"] = round(overlap, 3)
    # the embedding distance decides; in its middle band, whether the classes are COCO's tips it either way
    far = dom["band"] == "far" or (dom["band"] == "moderate" and overlap < 0.25)
    near = dom["band"] == "near" or (dom["band"] == "moderate" and overlap >= 0.5)
    scratch_h, ft_h = gpu_hours(n_train, SCRATCH_EPOCHS, imgsz), gpu_hours(n_train, FINETUNE_EPOCHS, imgsz)
    scratch_usd, ft_usd = scratch_h * gpu_hour_usd, ft_h * gpu_hour_usd
    reasons = []
    big = n_train >= SCRATCH_MIN_IMAGES
    affordable = budget_usd is None or scratch_usd <= budget_usd
    in_time = deadline_days is None or scratch_h / 24 <= deadline_days
    scratch_ok = far and big and affordable and in_time
    reasons.append(f"domain distance to COCO: Fréchet {dom['frechet_distance']:.1f} ({dom['band']}; thresholds "
                   f"{dom['thresholds']['near']:g}/{dom['thresholds']['far']:g}), {overlap:.0%} of class names are COCO classes"
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
        strategies.append("scratch")  # kept as the measured reference
        reasons.append("freeze depth: " + ("deep (backbone frozen first) since pretrained features transfer well" if near
                                           else "shallow (unfreeze early) since the features must adapt to the new domain"
                                           if far else "medium: freeze the early layers, let the rest adapt"))
    return {"data": str(ds.source), "profile": prof, "domain": dom, "scratch_worth_it": scratch_ok, "verdict": verdict,
            "strategies": strategies, "train_export_args": "--strategies " + ",".join(strategies), "reasons": reasons,
            "estimates": {"scratch_gpu_hours": round(scratch_h, 3), "finetune_gpu_hours": round(ft_h, 3),
                          "scratch_usd": round(scratch_usd, 2), "finetune_usd": round(ft_usd, 2), "gpu_hour_usd": gpu_hour_usd},
            "target": target}
