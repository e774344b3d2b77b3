"""Call `edgekit serve` (or Triton with the repository from `edgekit deploy --triton`) with NVIDIA's tritonclient.

    edgekit serve model.onnx --port 8000 &
    python examples/client_tritonclient.py bus.jpg --url 127.0.0.1:8000 --model model

The same request works against the Triton ensemble: both batch (max_batch_size > 0), so IMAGE's shape is
[batch, 1] = [1, 1] for one image, and the outputs carry that leading batch dimension. Needs tritonclient:
pip install 'edgekit[examples]' (or 'tritonclient[http]').
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import tritonclient.http as httpclient


def detect(client, model: str, image_path: str, conf: float | None = None):
    """One encoded image in, (boxes x1 y1 x2 y2 in original pixels, scores, class ids) out."""
    with open(image_path, "rb") as f:
        data = f.read()
    inp = httpclient.InferInput("IMAGE", [1, 1], "BYTES")  # [batch, 1]: what Triton expects of dims [1]
    inp.set_data_from_numpy(np.array([[data]], dtype=object))
    params = {"conf": conf} if conf is not None else None  # per-request thresholds (edgekit serve only)
    r = client.infer(model, [inp], parameters=params)
    boxes, scores, labels = (r.as_numpy(n) for n in ("BOXES", "SCORES", "LABELS"))
    keep = labels.reshape(-1) >= 0  # the Triton ensemble pads a multi-image request with label -1
    return boxes.reshape(-1, 4)[keep], scores.reshape(-1)[keep], labels.reshape(-1)[keep]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("images", nargs="+")
    ap.add_argument("--url", default="127.0.0.1:8000")
    ap.add_argument("--model", default="model")
    ap.add_argument("--conf", type=float, default=None)
    args = ap.parse_args(argv)

    client = httpclient.InferenceServerClient(args.url)
    if not client.is_model_ready(args.model):
        print(f"model {args.model} is not ready at {args.url}", file=sys.stderr)
        return 1
    meta = client.get_model_metadata(args.model)
    names = meta.get("parameters", {}).get("names")  # edgekit serve lists class names here
    for path in args.images:
        boxes, scores, labels = detect(client, args.model, path, args.conf)
        print(f"{path}: {len(scores)} detections")
        for b, s, c in zip(boxes, scores, labels):
            name = names[c] if names else str(c)
            print(f"  {name:>14} {s:.2f}  [{b[0]:.1f}, {b[1]:.1f}, {b[2]:.1f}, {b[3]:.1f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
