"""Compare fine-tuning strategies on one dataset: mAP50, mAP50-95, seconds per epoch, trainable parameters.

    python benchmarks/train_strategies.py --data /work/shared/data/vehicles_openimages/data.yaml \
        --weights /work/shared/data/weights/yolov8n_coco.pt --epochs 3 --imgsz 160 -o runs/bench_train

Each strategy trains from the same COCO weights (scratch from the architecture yaml, random init) through
edgekit.train.train, in this process, one after the other; --repeats N runs the whole list N times round-robin,
so that a shared CPU's load spreads over all strategies. Prints a markdown table and writes DIR/results.json.
Not imported by the tests.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

DEFAULT = "scratch,full,head,schedule:0:backbone,2:none,lora:8,auto"


def split_strategies(text: str) -> list[str]:
    """'a,schedule:0:backbone,2:none,b' -> ['a', 'schedule:0:backbone,2:none', 'b'] (stage items join a schedule)."""
    out: list[str] = []
    for tok in text.split(","):
        tok = tok.strip()
        if out and out[-1].startswith("schedule:") and tok[:1].isdigit() and ":" in tok:
            out[-1] += "," + tok
        elif tok:
            out.append(tok)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--weights", required=True, help="pretrained .pt (COCO)")
    p.add_argument("--arch", default=None, help="architecture yaml for scratch (default: the weights' own yaml)")
    p.add_argument("--strategies", default=DEFAULT)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--imgsz", type=int, default=160)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("-o", "--output", default="runs/bench_train")
    a = p.parse_args(argv)

    from edgekit.train import train

    out = Path(a.output)
    results = []
    for rep in range(a.repeats):
        for s in split_strategies(a.strategies):
            init = (a.arch or a.weights) if s == "scratch" else a.weights
            name = s.replace(":", "_").replace(",", "-") + (f"_r{rep}" if a.repeats > 1 else "")
            t = time.time()
            info = train(init, a.data, strategy=s, epochs=a.epochs, imgsz=a.imgsz, batch=a.batch, device=a.device,
                         out_dir=out / name, workers=0, log=lambda m: print(m, file=sys.stderr, flush=True))
            info["run_s"] = round(time.time() - t, 1)
            info["repeat"] = rep
            results.append(info)
            (out / "results.json").write_text(json.dumps(results, indent=2))
    print(table(results))
    return 0


def table(results: list[dict]) -> str:
    rows = ["| strategy | resolved | mAP50 | mAP50-95 | train s/epoch (each epoch) | trainable params (each epoch) | run s |",
            "|---|---|---|---|---|---|---|"]
    for r in results:
        ep = " / ".join(f"{x:.1f}" for x in r["epoch_s"])
        tp = " / ".join(f"{x / 1e6:.2f}M" for x in r["trainable_params"])
        rows.append(f"| {r['strategy']} | {r['resolved_strategy']} | {r['map50']:.3f} | {r['map50_95']:.3f} | "
                    f"{statistics.mean(r['epoch_s']):.1f} ({ep}) | {tp} | {r['run_s']:.0f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
