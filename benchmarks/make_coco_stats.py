"""Compute the COCO reference statistics shipped as edgekit/assets/coco_backbone_stats.npz.

    python benchmarks/make_coco_stats.py --coco ../shared/data/coco128
"""
import argparse
from pathlib import Path

import numpy as np

from edgekit.advise.domain import STATS, backbone_embeddings, stats
from edgekit.runtime.images import list_images

ap = argparse.ArgumentParser()
ap.add_argument("--coco", required=True, help="folder with images/train and images/val (coco128)")
args = ap.parse_args()
imgs = list_images(Path(args.coco) / "images" / "train")  # val stays out: it measures the self-distance
emb = backbone_embeddings(imgs)
mu, sigma = stats(emb)
np.savez_compressed(STATS, mu=mu.astype(np.float32), sigma=sigma.astype(np.float32), n=len(imgs))
print(f"wrote {STATS} from {len(imgs)} images, dim {mu.size}")
