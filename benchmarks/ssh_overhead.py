"""What `--target ssh://...` adds to `edgekit bench` and `edgekit eval`: the same artifact, data and options run here
and on the target, back to back (alternating), wall time of each whole command.

    python benchmarks/ssh_overhead.py --target ssh://pi@10.0.0.7/cpu --artifact model.onnx --data data.yaml

On loopback (the target is this machine) the difference is the transport and the second process, not the hardware.
The first remote run sends the files (a cache miss); the repeats find them in the device's cache.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(argv: list[str]) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "edgekit", "-q", *argv, "--json", str(out)], capture_output=True,
                           text=True)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            sys.exit(f"failed: edgekit {' '.join(argv)}: {r.stderr.strip()}")
        return wall, json.loads(out.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", required=True)
    p.add_argument("--artifact", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--iters", type=int, default=50)
    a = p.parse_args()
    cmds = {"bench": ["bench", a.artifact, "--iters", str(a.iters), "--warmup-ms", "0"],
            "eval": ["eval", a.artifact, "--data", a.data]}
    rows = []
    for name, argv in cmds.items():
        first, _ = timed(argv + ["--target", a.target])  # may send the files: reported apart
        local, remote, figs = [], [], []
        for _ in range(a.repeats):
            w, rl = timed(argv)
            local.append(w)
            w, rr = timed(argv + ["--target", a.target])
            remote.append(w)
            figs.append((rl, rr))
        med = statistics.median
        rows.append((name, med(local), med(remote), first, figs[-1]))
    print("| command | local s (median) | ssh target s (median) | added s | first ssh run s (files sent) |")
    print("|---|---|---|---|---|")
    for name, lo, re_, first, _ in rows:
        print(f"| {name} | {lo:.2f} | {re_:.2f} | {re_ - lo:+.2f} | {first:.2f} |")
    for name, *_, (rl, rr) in rows:
        if name == "eval":
            print(f"eval: local mAP50-95 {rl['map50_95']:.6f} mAP50 {rl['map50']:.6f}; "
                  f"target mAP50-95 {rr['map50_95']:.6f} mAP50 {rr['map50']:.6f}")
        else:
            print(f"bench: local e2e p50 {rl['latency_ms']['e2e']['p50']:.2f} ms; "
                  f"target e2e p50 {rr['latency_ms']['e2e']['p50']:.2f} ms")


if __name__ == "__main__":
    main()
