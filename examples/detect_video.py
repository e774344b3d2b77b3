"""Run an exported detector over a video (or a folder of frames, or a camera) and write an annotated video.

    python examples/detect_video.py model.onnx input.mp4 -o annotated.mp4
    python examples/detect_video.py model.onnx frames_folder/ -o annotated.mp4 --fps 10

Frames go through Engine.stream: decoding and letterboxing of the next frames overlap inference of the current
ones. The FPS shown (on the frames and on stderr) is end to end: read, preprocess, infer, postprocess, draw, write.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import deque
from pathlib import Path

import cv2
import numpy as np

from edgekit import Engine

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def frames(source: str):
    """Yield BGR frames from a video file, a camera index or a folder of images (sorted by name)."""
    p = Path(source)
    if p.is_dir():
        for f in sorted(x for x in p.iterdir() if x.suffix.lower() in IMAGE_SUFFIXES):
            img = cv2.imread(str(f))
            if img is None:
                raise SystemExit(f"{f}: cannot decode this image")
            yield img
        return
    cap = cv2.VideoCapture(int(source) if source.isdigit() else str(p))
    if not cap.isOpened():
        raise SystemExit(f"{source}: cannot open this video")
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield frame
    finally:
        cap.release()


def color(class_id: int) -> tuple[int, int, int]:
    rng = np.random.default_rng(class_id)
    return tuple(int(c) for c in rng.integers(64, 256, 3))


def draw(frame: np.ndarray, det, fps: float) -> np.ndarray:
    for (x1, y1, x2, y2), score, cid, label in zip(det.boxes, det.scores, det.class_ids, det.labels):
        c = color(int(cid))
        cv2.rectangle(frame, (int(x1), int(y1)), (int(x2), int(y2)), c, 2)
        cv2.putText(frame, f"{label} {score:.2f}", (int(x1), max(12, int(y1) - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, c, 1,
                    cv2.LINE_AA)
    cv2.putText(frame, f"{fps:.1f} FPS (end to end)", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 255, 0), 2,
                cv2.LINE_AA)
    return frame


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="model.onnx, OpenVINO .xml or folder, .engine")
    ap.add_argument("source", help="video file, folder of frames, or camera index (0)")
    ap.add_argument("-o", "--output", default="annotated.mp4")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--conf", type=float, default=0.25)
    ap.add_argument("--fps", type=float, default=None, help="frame rate of the written video (default: the input's or 25)")
    ap.add_argument("--show", action="store_true", help="also show the frames in a window (needs a display)")
    args = ap.parse_args(argv)

    engine = Engine(args.model, device=args.device, conf=args.conf)
    pending: deque = deque()  # frames read ahead by Engine.stream, waiting for their detections

    def tap(it):
        for f in it:
            pending.append(f)
            yield f

    writer, done, t0, fps = None, 0, time.perf_counter(), 0.0
    recent: deque = deque(maxlen=30)
    try:
        for det in engine.stream(tap(frames(args.source))):
            frame = pending.popleft()
            recent.append(time.perf_counter())
            fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 else 0.0
            if writer is None:
                size = (frame.shape[1], frame.shape[0])
                rate = args.fps or _source_fps(args.source) or 25.0
                writer = cv2.VideoWriter(args.output, cv2.VideoWriter_fourcc(*"mp4v"), rate, size)
                if not writer.isOpened():
                    raise SystemExit(f"{args.output}: cannot write this video")
            frame = draw(frame, det, fps)
            if (frame.shape[1], frame.shape[0]) != size:  # a folder of frames of mixed sizes
                frame = cv2.resize(frame, size)
            writer.write(frame)
            done += 1
            print(f"\rframe {done}: {len(det)} detections, {fps:.1f} FPS", end="", file=sys.stderr, flush=True)
            if args.show:
                cv2.imshow("edgekit", frame)
                if cv2.waitKey(1) & 0xFF == 27:
                    break
    finally:
        if writer is not None:
            writer.release()
        engine.close()
    wall = time.perf_counter() - t0
    print(f"\n{done} frames in {wall:.2f} s ({done / wall if wall else 0:.1f} FPS end to end) -> {args.output}",
          file=sys.stderr)
    return 0 if done else 1


def _source_fps(source: str) -> float | None:
    if Path(source).is_dir() or source.isdigit():
        return None
    cap = cv2.VideoCapture(source)
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return fps if fps and fps > 0 else None


if __name__ == "__main__":
    sys.exit(main())
