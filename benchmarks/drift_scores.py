"""How well drift tracking separates domains: windows of frames from several sets against the demo model's profile.

    python benchmarks/drift_scores.py --data-root /work/shared/data [--imgsz 320] [--window 16,64] [--draws 20]

The demo model (the bundled COCO YOLOv8n) is exported at --imgsz with the demo val split's drift profile (32
images). Each set's frames go through the artifact once (Engine, batch 1, as served); then --draws windows of N
frames are drawn from each set (without replacement within a window; with it across windows) and judged by the same
DriftTracker serve uses. Sets: demo val (the profile's own images), Vehicles-OpenImages test (held-out, same domain),
coco128 val (COCO: other scenes, same camera kind), DeepPCB val (printed-circuit boards), demo val darkened to 30 %
and blurred. Per set and N: the median of each score over its warn threshold, and the share of windows at warn or
drift. Prints a Markdown table (and --json FILE). Reads the data under --data-root; never imported by the tests.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def sets(root: Path, limit: int) -> dict:
    from edgekit.assets import demo_images
    from edgekit.runtime.images import list_images

    return {"demo val (profile's own)": demo_images(),
            "Vehicles test (held out)": list_images(root / "vehicles_openimages" / "images" / "test")[:limit],
            "coco128 val": list_images(root / "coco128" / "images" / "val")[:limit],
            "DeepPCB val": list_images(root / "deeppcb" / "images" / "val")[:limit],
            "demo val dark+blur": "dark"}


def dark(im):
    import cv2

    return cv2.GaussianBlur((im * 0.3).astype(np.uint8), (9, 9), 0)


def rows_of(engine, prof, images, transform=None) -> list:
    from edgekit.drift.scores import image_stats

    out = []
    for p in images:
        im = engine.decode(p)
        if transform:
            im = transform(im)
        blob, infos = engine.preprocess([im])
        raw, emb = engine.infer_embed(blob)
        d = engine.postprocess(raw, infos, conf=prof.conf)[0]
        out.append(prof.row(emb[0], d.scores, d.class_ids, image_stats(im)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--window", default="16,64")
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--limit", type=int, default=128, help="frames per set at most (default 128)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from serve_overhead import cpu_line

    from edgekit.assets import demo_data, demo_images, demo_weights
    from edgekit.drift import DriftTracker, load_profile
    from edgekit.drift.tracker import SCORES
    from edgekit.export import export_onnx
    from edgekit.runtime import Engine

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgekit-drift-") as tmp:
        onnx = export_onnx(demo_weights(), tmp, imgsz=args.imgsz, parity_images=False, log=lambda *a: None,
                           profile=demo_data())
        prof = load_profile(onnx)
        with Engine(onnx) as eng:
            feats = {}
            for name, images in sets(args.data_root, args.limit).items():
                feats[name] = (rows_of(eng, prof, demo_images(), dark) if images == "dark"
                               else rows_of(eng, prof, images))
    rng = np.random.default_rng(0)
    result = {"imgsz": args.imgsz, "profile_images": prof.images, "draws": args.draws, "cpu": cpu_line(),
              "loadavg": os.getloadavg(), "sets": {}}
    lines = []
    for n in [int(x) for x in args.window.split(",")]:
        tracker = DriftTracker(prof, window=n)
        lines += [f"\nWindow of {n} frames (thresholds warn/drift: "
                  + ", ".join(f"{k} {a:.3g}/{b:.3g}" for k, (a, b) in tracker.limits.items()) + ")\n",
                  "| set | frames | " + " | ".join(f"{k} / warn" for k in SCORES)
                  + " | windows warn+ | windows drift |",
                  "|---" * (len(SCORES) + 4) + "|"]
        for name, rows in feats.items():
            verdicts, ratios = [], {k: [] for k in SCORES}
            for _ in range(args.draws):
                idx = rng.choice(len(rows), n, replace=len(rows) < n)
                v = tracker.judge([rows[i] for i in idx])
                verdicts.append(v["verdict"])
                for k in SCORES:
                    if v["scores"].get(k) is not None and k in tracker.limits:
                        ratios[k].append(v["scores"][k] / tracker.limits[k][0])
            med = {k: (float(np.median(r)) if r else None) for k, r in ratios.items()}
            warn = sum(x != "ok" for x in verdicts) / len(verdicts)
            drift = sum(x == "drift" for x in verdicts) / len(verdicts)
            result["sets"].setdefault(name, {})[str(n)] = {"frames": len(rows), "median_over_warn": med,
                                                          "warn_or_drift": warn, "drift": drift}
            lines.append(f"| {name} | {len(rows)} | " + " | ".join("-" if med[k] is None else f"{med[k]:.2f}"
                                                                 for k in SCORES) + f" | {warn:.2f} | {drift:.2f} |")
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    print(f"CPU: {result['cpu']}; load average {', '.join(f'{x:.2f}' for x in result['loadavg'])}; "
          f"{result['wall_s']} s")
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
