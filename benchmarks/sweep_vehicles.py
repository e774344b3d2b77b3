"""Issue F's measurements on Vehicles-OpenImages: models x input sizes x strategies under a latency budget, and
successive halving against the full grid. Writes benchmarks/results/F_sweep.md (and DIR/F_sweep.json).

    python benchmarks/sweep_vehicles.py --data ../shared/data/vehicles_openimages/data.yaml -o runs/F
    python benchmarks/sweep_vehicles.py --data ... --reduced -o runs/F-reduced   # minutes: proves the script

Part 1 (`--part budget`): `train-export --models yolov8n_coco.pt,yolo11n_coco.pt --imgsz 320,640 --strategies
head,schedule:0:backbone,1:none,full --epochs 3`, then the same run resumed (every stage skipped) with
`--max-latency-ms` set between the fastest and the slowest row's e2e p50. Part 2 (`--part halving`): the grid of the
two models x imgsz 320,480 x three strategies (12 trials) at 9 epochs, `--search grid` and `--search halving` (rungs
1 -> 3 -> 9), compared on training seconds and on the recommended model x imgsz (paired test between the two picks,
which were evaluated on the same val images). The dataset is only read; `--subset` copies a seeded subset first.
Not imported by the tests.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def subset(data: Path, n_train: int, n_val: int, dst: Path) -> Path:
    """A seeded copy of n_train/n_val images (and labels) of a YOLO dataset, for a short run; its whole test split
    too, when it has one (train-export confirms the pick on it)."""
    import yaml

    doc = yaml.safe_load(data.read_text())
    splits = (("train", n_train), ("val", n_val)) + ((("test", 10 ** 9),) if doc.get("test") else ())
    for split, n in splits:
        src = data.parent / doc[split]
        imgs = sorted(p for p in src.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        for p in random.Random(0).sample(imgs, min(n, len(imgs))):
            (dst / "images" / split).mkdir(parents=True, exist_ok=True)
            (dst / "labels" / split).mkdir(parents=True, exist_ok=True)
            shutil.copy(p, dst / "images" / split / p.name)
            lbl = src.parent.parent / "labels" / split / (p.stem + ".txt")
            if lbl.exists():
                shutil.copy(lbl, dst / "labels" / split / lbl.name)
    (dst / "data.yaml").write_text(yaml.safe_dump({**{s: f"images/{s}" for s, _ in splits}, "nc": doc["nc"],
                                                    "names": doc["names"]}))
    return dst / "data.yaml"


def pipeline(out, data, models, imgsz, strategies, epochs, a, **kw):
    from edgekit.sweep.pipeline import Pipeline, split_strategies

    log = (lambda m: print(m, file=sys.stderr, flush=True)) if a.verbose else (lambda m: None)
    t = time.time()
    doc = Pipeline(out=Path(out), data=data, model=Path(models[0]), models=models, imgsz=imgsz,
                   strategies=split_strategies(strategies), epochs=epochs, batch=a.batch, backends=a.backends.split(","),
                   precisions=a.precisions.split(",") if a.precisions else None, calib_size=a.calib_size,
                   bench_iters=a.bench_iters, log=log, **kw).run()
    doc["wall_s"] = round(time.time() - t, 1)
    return doc


def row_line(r: dict) -> str:
    ci = r.get("map50_95_ci") or [math.nan, math.nan]
    return (f"| {r['model']} | {r['imgsz']} | {r['strategy']} | {r['backend']} {r['precision']} | "
            f"{r.get('map50_95', math.nan):.3f} [{ci[0]:.3f}, {ci[1]:.3f}] | {r.get('latency_p50_ms') or math.nan:.1f} | "
            f"{r.get('latency_p90_ms') or math.nan:.1f} | {r.get('fps_e2e') or math.nan:.1f} | "
            f"{r.get('fps_cv') if r.get('fps_cv') is not None else '-'} | {r.get('train_wall_s') or 0:.0f} | "
            f"{', '.join(r.get('misses') or []) or r.get('status')} |")


HEAD = ["| model | imgsz | strategy | backend | mAP50-95 [95% CI] | e2e p50 ms | e2e p90 ms | FPS e2e | FPS cv | "
        "train s | status |", "|---|---|---|---|---|---|---|---|---|---|---|"]


def part_budget(a, data, out: Path, md: list, res: dict) -> None:
    models = [str(Path(a.weights) / m) for m in a.models.split(",")]
    kw = dict(models=models, imgsz=[int(x) for x in a.imgsz.split(",")], strategies=a.strategies, epochs=a.epochs)
    doc = pipeline(out / "budget", data, a=a, resume=a.resume, **kw)
    ok = [r for r in doc["rows"] if r.get("status") == "ok"]
    fps = [r["fps_e2e"] for r in ok]
    lat = sorted(r["latency_p50_ms"] for r in ok)
    budget = round(math.sqrt(lat[0] * lat[-1]), 1)  # between the fastest and the slowest row
    t = time.time()
    doc2 = pipeline(out / "budget", data, a=a, resume=True, max_latency_ms=budget, **kw)
    rec = doc2["recommendation"]
    pick = next(r for r in doc2["rows"] if r.get("artifact") == rec.get("artifact") and r["precision"] == rec["precision"])
    res["budget"] = {"wall_s": doc["wall_s"], "resume_wall_s": round(time.time() - t, 1), "fps_span": max(fps) / min(fps),
                     "max_latency_ms": budget, "recommendation": rec, "pick_latency_p50_ms": pick["latency_p50_ms"],
                     "rows": len(doc2["rows"]), "train_seconds_total": doc["train_seconds_total"]}
    md += [f"## 1. Models x input sizes x strategies under a latency budget", "",
           f"`train-export --models {a.models} --imgsz {a.imgsz} --strategies {a.strategies} --epochs {a.epochs}`"
           f" ({doc['wall_s']:.0f} s wall, {doc['train_seconds_total']:.0f} s of it training), then resumed with "
           f"`--max-latency-ms {budget:g}` (geometric mean of the fastest and slowest e2e p50; every stage skipped, "
           f"{res['budget']['resume_wall_s']:.0f} s).", "", *HEAD, *[row_line(r) for r in doc2["rows"]], "",
           f"- FPS e2e spans {res['budget']['fps_span']:.2f}x across rows ({min(fps):.1f} to {max(fps):.1f}).",
           f"- Recommended: {rec.get('model')}@{rec.get('imgsz')} {rec.get('strategy')} {rec.get('backend')} "
           f"{rec.get('precision')}, e2e p50 {pick['latency_p50_ms']:.1f} ms "
           f"({'meets' if pick['latency_p50_ms'] <= budget else 'MISSES'} the {budget:g} ms budget); bound_by "
           f"{rec.get('bound_by')}.", f"- Why: {rec.get('why')}", ""]
    md += (top3_lines(doc, "Top three without a latency limit") + top3_lines(doc2, "Top three under the budget")
           + int8_recall_lines(doc2["rows"], out / "budget"))


def int8_recall_lines(rows: list[dict], root: Path) -> list[str]:
    """Issue T: for each INT8 row, each class's recall at the FP32 artifact's threshold, FP32 -> INT8 (from the
    artifact's sidecar `accuracy_gate`, i.e. the gate's own figures), with the path that produced it."""
    out = []
    for r in rows:
        if r.get("precision") != "int8" or not r.get("artifact"):
            continue
        side = root / Path(r["artifact"]).with_suffix(".json")
        if not side.is_file():
            continue
        doc = json.loads(side.read_text())
        g = doc.get("accuracy_gate") or {}
        fp32, q = (g.get("threshold_fp32") or {}), (g.get("at_fp32_threshold") or {})
        if not fp32.get("per_class"):
            continue
        cells = [f"{c} {v['recall']:.3f} -> {(q.get('per_class') or {}).get(c, {}).get('recall', math.nan):.3f} "
                 f"({v.get('boxes')})" for c, v in fp32["per_class"].items()]
        out.append(f"| {r['model']} | {r['imgsz']} | {r['strategy']} | {doc.get('status')} "
                   f"{(doc.get('quantization') or {}).get('path')} | {fp32['conf']:g} | {' ; '.join(cells)} |")
    if not out:
        return []
    return ["Per-class recall at the FP32 artifact's deployment threshold (max F1 on val), FP32 -> INT8 (val boxes):",
            "", "| model | imgsz | strategy | gate, path | conf | class recall FP32 -> INT8 (boxes) |",
            "|---|---|---|---|---|---|", *out, ""]


def top3_lines(doc: dict, title: str) -> list[str]:
    """Issue T: the recommendation's top three rows (train-export's `confirmation`: the pick, then the rule's next
    picks) with val and test mAP50-95 and each row's threshold, P, R, F1 on val; whether their val order holds on
    test."""
    c = doc.get("confirmation") or {}
    if not c.get("rows"):
        return [f"{title}: no test confirmation in this report ({'no test split' if c else 'not measured'}).", ""]
    rows = {tuple(r.get(k) for k in ("model", "imgsz", "strategy", "backend", "precision")): r for r in doc["rows"]}
    lines = [f"{title} ({c['images']} {c['split']} images):", "",
             "| rank | model | imgsz | strategy | backend | val mAP50-95 [95% CI] | test mAP50-95 [95% CI] | conf | "
             "P / R / F1 at conf (val) |", "|---|---|---|---|---|---|---|---|---|"]
    for e in c["rows"]:
        r = rows.get(tuple(e.get(k) for k in ("model", "imgsz", "strategy", "backend", "precision")), {})
        ci, tci = r.get("map50_95_ci") or [math.nan] * 2, e.get("test_map50_95_ci") or [math.nan] * 2
        prf = (f"{r['precision_at_threshold']:.3f} / {r['recall_at_threshold']:.3f} / {r['f1_at_threshold']:.3f}"
               if r.get("threshold") is not None else "-")
        lines.append(f"| {e['rank']} | {e['model']} | {e['imgsz']} | {e['strategy']} | {e['backend']} "
                     f"{e['precision']} | {e['map50_95']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] | {e['test_map50_95']:.3f} "
                     f"[{tci[0]:.3f}, {tci[1]:.3f}] | {r.get('threshold', math.nan):.3f} | {prf} |")
    swaps = "; ".join(f"{w['val_higher']} above {w['test_higher']} on val ({w['val_map50_95'][0]:.4f} vs "
                      f"{w['val_map50_95'][1]:.4f}), below it on test ({w['test_map50_95'][0]:.4f} vs "
                      f"{w['test_map50_95'][1]:.4f})" for w in c.get("swaps") or [])
    lines += ["", f"Order on test: {'holds' if c.get('test_rank_agrees') else 'does NOT hold (' + swaps + ')'}.", ""]
    return lines


def part_halving(a, data, out: Path, md: list, res: dict) -> None:
    from edgekit.eval.bootstrap import Matches, paired_diff

    models = [str(Path(a.weights) / m) for m in a.models.split(",")]
    kw = dict(models=models, imgsz=[int(x) for x in a.halving_imgsz.split(",")], strategies=a.halving_strategies,
              epochs=a.halving_epochs)
    docs = {s: pipeline(out / f"search-{s}", data, a=a, search=s, **kw) for s in ("grid", "halving")}
    picks = {}
    for s, d in docs.items():
        rec = d["recommendation"]
        picks[s] = next(r for r in d["rows"] if r.get("artifact") == rec.get("artifact")
                        and r["precision"] == rec["precision"])
    g, h = picks["grid"], picks["halving"]
    d = paired_diff(Matches.load(g["matches"]), Matches.load(h["matches"]))
    ratio = docs["halving"]["train_seconds_total"] / max(docs["grid"]["train_seconds_total"], 1e-9)
    res["halving"] = {s: {"train_seconds_total": docs[s]["train_seconds_total"], "wall_s": docs[s]["wall_s"],
                          "pick": {k: picks[s][k] for k in ("model", "imgsz", "strategy", "backend", "precision",
                                                            "map50_95", "map50_95_ci", "fps_e2e")},
                          "pruned": docs[s].get("pruned")} for s in docs}
    res["halving"]["train_ratio"] = ratio
    res["halving"]["paired_grid_minus_halving"] = d
    n = len(kw["imgsz"]) * len(models) * len(docs["grid"]["config"]["strategies"])
    md += [f"## 2. Successive halving against the full grid", "",
           f"{n} trials (`--models {a.models} --imgsz {a.halving_imgsz} --strategies {a.halving_strategies} --epochs "
           f"{a.halving_epochs}`), `--search grid` and `--search halving`.", "",
           "| search | training s | wall s | recommended | mAP50-95 [95% CI] | FPS e2e |", "|---|---|---|---|---|---|"]
    for s in docs:
        p = picks[s]
        md.append(f"| {s} | {docs[s]['train_seconds_total']:.0f} | {docs[s]['wall_s']:.0f} | {p['model']}@{p['imgsz']} "
                  f"{p['strategy']} {p['backend']} {p['precision']} | {p['map50_95']:.3f} "
                  f"[{p['map50_95_ci'][0]:.3f}, {p['map50_95_ci'][1]:.3f}] | {p['fps_e2e']:.1f} |")
    same = (g["model"], g["imgsz"]) == (h["model"], h["imgsz"])
    md += ["", f"- Halving trained {ratio:.0%} of the grid's seconds; the recommended model x imgsz is "
               f"{'the same' if same else 'different'}; grid pick minus halving pick: {d['diff']:+.2f} mAP50-95 "
               f"points, paired 95% interval [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}] on {d['images']} val images "
               f"({'not significant' if d['ci'][0] <= 0 <= d['ci'][1] else 'significant'}).",
           "- Pruned: " + "; ".join(f"{p['model']}@{p['imgsz']} {p['strategy']} at rung {p['rung']} "
                                    f"(mAP50-95 {p['map50_95'] or 0:.3f})" for p in docs["halving"]["pruned"]), ""]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="Vehicles-OpenImages data.yaml (read only)")
    p.add_argument("--weights", default=None, help="folder with the .pt files (default: DATA/../../weights)")
    p.add_argument("--models", default="yolov8n_coco.pt,yolo11n_coco.pt")
    p.add_argument("--imgsz", default="320,640")
    p.add_argument("--strategies", default="head,schedule:0:backbone,1:none,full")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--halving-imgsz", default="320,480")
    p.add_argument("--halving-strategies", default="head,schedule:0:backbone,3:none,full")
    p.add_argument("--halving-epochs", type=int, default=9)
    p.add_argument("--part", choices=("budget", "halving", "both"), default="both")
    p.add_argument("--subset", default=None, help="TRAIN,VAL: train on a seeded subset copy")
    p.add_argument("--reduced", action="store_true",
                   help="prove the script in minutes: one model, imgsz 160,224, head,full, 1 epoch (halving: 3), "
                        "subset 64,32, ONNX Runtime FP32 only")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--backends", default="openvino")
    p.add_argument("--precisions", default=None)
    p.add_argument("--calib-size", type=int, default=300)
    p.add_argument("--bench-iters", type=int, default=30)
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "F_sweep.md"))
    p.add_argument("--resume", action="store_true", help="part 1: reuse the stages an earlier run finished")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("-o", "--output", default="runs/F")
    a = p.parse_args(argv)
    if a.reduced:
        a.models, a.imgsz, a.strategies, a.epochs = a.models.split(",")[0], "160,224", "head,full", 1
        a.halving_imgsz, a.halving_strategies, a.halving_epochs = "160", "head,schedule:0:backbone,1:none,full", 3
        a.subset, a.backends, a.precisions, a.bench_iters = a.subset or "64,32", "onnxruntime", "fp32", 10

    from edgekit.bench.device import cpu_info

    data = Path(a.data)
    a.weights = a.weights or str(data.parent.parent / "weights")
    out = Path(a.output)
    out.mkdir(parents=True, exist_ok=True)
    if a.subset:
        n_train, n_val = (int(x) for x in a.subset.split(","))
        shutil.rmtree(out / "data", ignore_errors=True)
        data = subset(data, n_train, n_val, out / "data")
    cpu = cpu_info()
    t0 = time.time()
    md = ["# F: models x input sizes x strategies, statistics, halving (benchmarks/sweep_vehicles.py)", "",
          f"Machine: {cpu.get('model')}, {cpu.get('cores')} cores, {cpu.get('memory_gb')} GB; ISA flags: "
          f"{', '.join(cpu.get('isa') or []) or 'none of avx2/avx512/vnni/bf16/amx'}."
          f" Data: `{a.data}`" + (f" (seeded subset {a.subset} of train,val)" if a.subset else "") + ".",
          f"Command: `python benchmarks/sweep_vehicles.py {' '.join(argv if argv is not None else sys.argv[1:])}`", ""]
    res: dict = {"cpu": cpu, "args": vars(a)}
    if a.part in ("budget", "both"):
        part_budget(a, data, out, md, res)
    if a.part in ("halving", "both"):
        part_halving(a, data, out, md, res)
    res["wall_s"] = round(time.time() - t0, 1)
    md.append(f"Total wall time of this script: {res['wall_s']:.0f} s.")
    (out / "F_sweep.json").write_text(json.dumps(res, indent=1, default=str))
    Path(a.results).write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
