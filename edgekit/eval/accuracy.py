"""mAP of an artifact run through Engine, computed with faster-coco-eval (pycocotools as fallback)."""
from __future__ import annotations

import time

import numpy as np

from .._imports import require
from ..data import Dataset, load_dataset
from ..runtime.images import read_image
from ..errors import DataError, EdgekitError
from ..runtime import Engine
from .bootstrap import RESAMPLES, SEED, Matches, bootstrap_ci
from .threshold import at_conf, choose_threshold

# Ultralytics' val settings, so that figures compare with `yolo val`
EVAL_CONF, EVAL_IOU, EVAL_MAX_DET = 0.001, 0.7, 300


def check_classes(engine: Engine, ds: Dataset) -> None:
    if engine.meta.nc != ds.nc:
        raise DataError(ds.source, f"dataset has {ds.nc} classes but the model {engine.path.name} has "
                                   f"{engine.meta.nc}: evaluate with the data the model was trained for")


def _evaluator():
    try:
        from faster_coco_eval import COCO, COCOeval_faster

        return COCO, COCOeval_faster, "faster-coco-eval"
    except ImportError:
        pass
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval, "pycocotools"
    except ImportError:
        require("faster_coco_eval", "mAP evaluation")  # raises with the install hint
        raise


def coco_map(gt_images: list[dict], gt_anns: list[dict], dets: np.ndarray, nc: int, max_det: int = EVAL_MAX_DET) -> dict:
    """COCO mAP from ground truth (pixel xywh) and detections (N, 7: image_id, x, y, w, h, score, class)."""
    COCO, COCOeval, lib = _evaluator()
    gt = COCO()
    gt.dataset = {"images": gt_images, "annotations": gt_anns,
                  "categories": [{"id": i, "name": str(i)} for i in range(nc)]}
    gt.createIndex()
    if len(dets) == 0:
        return {"map50": 0.0, "map50_95": 0.0, "per_size": {"small": None, "medium": None, "large": None},
                "evaluator": lib}
    dt = gt.loadRes(np.asarray(dets, np.float64))
    ev = COCOeval(gt, dt, "bbox")
    ev.params.maxDets = [1, 10, max_det]
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    s = ev.stats
    size = {k: (round(float(v), 5) if v >= 0 else None) for k, v in zip(("small", "medium", "large"), s[3:6])}
    return {"map50_95": max(float(s[0]), 0.0), "map50": max(float(s[1]), 0.0), "per_size": size, "evaluator": lib}


def evaluate(artifact, data, split: str = "val", device: str = "cpu", backend: str | None = None,
             batch: int = 1, limit: int | None = None, skip_bad: bool = False, progress: bool = True,
             engine: Engine | None = None, precision: str | None = None, matches_path=None,
             resamples: int = RESAMPLES, seed: int = SEED, target_precision: float | None = None,
             target_recall: float | None = None, at_threshold: float | None = None) -> dict:
    """Run an artifact over a split through Engine and return {"map50", "map50_95", "map50_95_ci", "per_class", ...}.

    precision: execution precision to ask the backend for (default: the artifact's own, fp32 for fp32/int8).
    map50_95_ci: per-image bootstrap 95 % interval (`resamples` draws, fixed `seed`); per_class: AP50-95 by class name
    (None where the split has no box of it), per_class_instances: its val boxes; per_size: COCO's small/medium/large AP.
    matches_path: also save the per-image matches there (edgekit.eval.bootstrap.Matches), for paired comparisons.
    threshold: the deployment threshold (edgekit.eval.threshold: max F1, or target_precision / target_recall) with
    precision, recall and F1 there, overall and per class; at_threshold: the same figures at a given conf (the FP32
    artifact's threshold, for the recall gate).
    """
    _evaluator()  # a missing evaluator fails here, before any inference
    ds = data if isinstance(data, Dataset) else load_dataset(data, skip_bad=skip_bad)
    samples = ds.samples(split)[:limit] if limit else ds.samples(split)
    own = engine is None
    engine = engine or Engine(artifact, device=device, backend=backend,
                              **({"precision": precision} if precision else {}))
    check_classes(engine, ds)
    images, anns, rows = [], [], []
    t0 = time.perf_counter()
    from tqdm import tqdm

    bar = tqdm(total=len(samples), desc=f"eval {engine.path.name}", unit="img", leave=False,
               disable=None if progress else True)  # None: shown on a terminal only, not in logs
    try:
        for s0 in range(0, len(samples), batch):
            chunk, arrays = [], []
            for s in samples[s0:s0 + batch]:
                try:
                    arrays.append(read_image(s.image))
                    chunk.append(s)
                except DataError as e:
                    if not skip_bad:
                        raise
                    ds.skipped.append(str(e))
            if not arrays:
                continue
            blob, infos = engine.preprocess(arrays)
            dets = engine.postprocess(engine.infer(blob), infos, conf=EVAL_CONF, iou=EVAL_IOU,
                                      max_det=EVAL_MAX_DET, multi_label=True)
            for s, im, d in zip(chunk, arrays, dets):
                img_id = len(images) + 1
                h, w = im.shape[:2]
                images.append({"id": img_id, "width": w, "height": h, "file_name": s.image.name})
                for c, b in zip(s.classes, s.boxes_xyxy(w, h)):
                    bw, bh = b[2] - b[0], b[3] - b[1]
                    anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": int(c), "iscrowd": 0,
                                 "bbox": [float(b[0]), float(b[1]), float(bw), float(bh)], "area": float(bw * bh)})
                if len(d):
                    bx = d.boxes.astype(np.float64)
                    r = np.empty((len(d), 7))
                    r[:, 0] = img_id
                    r[:, 1:3] = bx[:, :2]
                    r[:, 3:5] = bx[:, 2:] - bx[:, :2]
                    r[:, 5] = d.scores
                    r[:, 6] = d.class_ids
                    rows.append(r)
            bar.update(len(chunk))
    finally:
        bar.close()
        precision_done = engine.precision_executed
        if own:
            engine.close()
    if not images:
        raise EdgekitError(f"{ds.source}: no image of split '{split}' could be evaluated")
    wall = time.perf_counter() - t0
    dets = np.concatenate(rows) if rows else np.zeros((0, 7))
    res = coco_map(images, anns, dets, ds.nc)
    m = Matches.build(images, anns, dets, ds.nc)
    if matches_path is not None:
        m.save(matches_path)
    ap, inst = m.class_ap(), m.ngt.sum(0)
    names = list(ds.names)
    return {"map50": round(res["map50"], 5), "map50_95": round(res["map50_95"], 5),
            "map50_95_ci": bootstrap_ci(m, resamples, seed) if resamples else None,
            "per_class": {ds.names[k]: (round(float(a), 5) if np.isfinite(a) else None) for k, a in enumerate(ap)},
            "per_class_instances": {ds.names[k]: int(n) for k, n in enumerate(inst)}, "per_size": res["per_size"],
            "matches": str(matches_path) if matches_path is not None else None, "images": len(images),
            "boxes": len(anns), "split": split, "data": str(ds.source), "artifact": str(engine.path),
            "backend": engine.backend_name, "device": device, "precision": engine.meta.precision,
            "precision_executed": precision_done, "evaluator": res["evaluator"],
            "wall_s": round(wall, 2), "skipped": list(ds.skipped),
            "threshold": choose_threshold(m, names, target_precision, target_recall),
            **({"at_threshold": at_conf(m, names, at_threshold)} if at_threshold is not None else {})}
