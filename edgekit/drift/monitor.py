"""`edgekit monitor`: the drift analysis of `serve`, offline, over a folder of frames (in name order) or a video.

Each frame goes through the artifact exactly as served (Engine, batch 1, the profile's threshold) into the same
DriftTracker, judged after every frame once the window is full; `switches` marks each frame where the verdict
changes (e.g. ok -> drift), the frame named.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from .._imports import require
from ..errors import ArtifactError, DataError
from ..runtime.images import IMAGE_SUFFIXES, list_images, read_image
from .profile import load_profile
from .scores import image_stats
from .tracker import DEFAULT_WINDOW, LEVELS, SCORES, DriftTracker

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}


def frames(source) -> Iterator[tuple[str, np.ndarray]]:
    """(name, HWC uint8 BGR image) of each frame: a folder's images in name order, or a video's frames."""
    p = Path(source)
    if p.is_dir():
        found = list_images(p)
        if not found:
            raise DataError(p, f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
        for f in found:
            yield str(f.relative_to(p)), read_image(f)
        return
    if not p.is_file():
        raise DataError(p, "not found: expected a folder of frames or a video file")
    if p.suffix.lower() not in VIDEO_SUFFIXES:
        raise DataError(p, f"not a folder or a video ({', '.join(sorted(VIDEO_SUFFIXES))})")
    import cv2

    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        raise DataError(p, "OpenCV cannot open this video")
    try:
        k = 0
        while True:
            ok, im = cap.read()
            if not ok:
                break
            yield f"frame {k}", im
            k += 1
    finally:
        cap.release()
    if k == 0:
        raise DataError(p, "the video has no readable frame")


def monitor(engine, source, window: int = DEFAULT_WINDOW, log=None) -> dict:
    """The drift verdict after each frame of `source`, and the frames where it changed."""
    prof = load_profile(engine.path, engine.meta.raw)
    if prof is None:
        raise ArtifactError(f"{engine.path}: no profile: the artifact carries no drift profile (sidecar key "
                            f"'drift_profile'); export or quantize it with --data, or run train-export")
    tracker = DriftTracker(prof, window, every=1, has_embedding=engine.has_embedding)
    series, switches, last = [], [], None
    for k, (name, im) in enumerate(frames(source)):
        blob, infos = engine.preprocess([im])
        raw, emb = engine.infer_embed(blob)
        d = engine.postprocess(raw, infos, conf=min(engine.conf, prof.conf))[0]
        v = tracker.add(None if emb is None else emb[0], d.scores, d.class_ids, image_stats(im))
        series.append({"frame": k, "name": name, "verdict": v["verdict"], "scores": v.get("scores", {})})
        if v["verdict"] != last and last is not None and (last, v["verdict"]) != ("collecting", "ok"):
            switches.append({"frame": k, "name": name, "from": last, "to": v["verdict"],
                             "moved": [m["score"] for m in v.get("moved", [])]})
        last = v["verdict"]
    if not series:
        raise DataError(Path(source), "no frames")
    counts = {lv: sum(s["verdict"] == lv for s in series) for lv in ("collecting", *LEVELS)}
    if log:
        log(f"{len(series)} frames, windows of {window}: " + ", ".join(f"{v} {n}" for v, n in counts.items() if n)
            + "".join(f"; frame {s['frame']} ({s['name']}): {s['from']} -> {s['to']}" for s in switches))
    return {"artifact": str(engine.path), "source": str(source), "window": window, "frames": len(series),
            "profile": {"images": prof.images, "conf": prof.conf, "embedding": tracker.ref.emb is not None},
            "thresholds": {k: list(v) for k, v in tracker.limits.items()}, "verdicts": counts,
            "switches": switches, "series": series}


def plot(result: dict, path) -> Path:
    """Each score over the frames, divided by its warn threshold (1: warn, drift above the dashed line), with the
    verdict changes marked; PNG (matplotlib Agg, its bundled font)."""
    matplotlib = require("matplotlib", "the monitor plot (or --plot '')")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    thr = result["thresholds"]
    x = [s["frame"] for s in result["series"]]
    fig, ax = plt.subplots(figsize=(9, 4), dpi=100)
    for k in SCORES:
        if k not in thr:
            continue
        y = [np.nan if s["scores"].get(k) is None else s["scores"][k] / thr[k][0] for s in result["series"]]
        if not all(np.isnan(y)):
            ax.plot(x, y, label=k, linewidth=1.2)
    drift_ratio = np.median([b / a for a, b in thr.values() if a > 0]) if thr else 2.0
    ax.axhline(1.0, color="orange", linestyle=":", linewidth=1, label="warn")
    ax.axhline(drift_ratio, color="red", linestyle="--", linewidth=1, label="drift (median)")
    for s in result["switches"]:
        ax.axvline(s["frame"], color="red" if s["to"] == "drift" else "grey", alpha=0.6)
        ax.annotate(f"{s['from']}→{s['to']}", (s["frame"], ax.get_ylim()[1]), fontsize=7, rotation=90,
                    va="top", ha="right")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_ylim(bottom=0)
    ax.set_xlabel(f"frame (window of {result['window']})")
    ax.set_ylabel("score / warn threshold")
    ax.set_title(f"drift of {Path(result['source']).name} against {Path(result['artifact']).name}'s profile",
                 fontsize=9)
    ax.legend(fontsize=7, ncol=3, loc="upper left")
    fig.tight_layout()
    from ..io import atomic_path

    path = Path(path)
    with atomic_path(path) as t:
        fig.savefig(t, format="png")
    plt.close(fig)
    return path
