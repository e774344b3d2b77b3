"""The training data's profile that travels with an artifact, for drift tracking after deployment.

Computed through the artifact itself (Engine: its own preprocessing, backend and deployment threshold) on the val
split (or a folder of images), one row per image:
- the pooled-backbone embedding the export adds as a second output, projected to EMBED_DIMS dimensions by a fixed
  random orthonormal matrix (so the Fréchet term is cheap and stays well conditioned on a few dozen images);
- its detections at the threshold: counts per confidence bin (bins: quintiles of the profile's confidences) and per
  class, plus one "no detection" column;
- image statistics (edgekit.drift.scores.image_stats).

The rows go to `<model>.drift.npz` beside the model file; the sidecar's `drift_profile` names that file (with its
sha256) and carries a readable summary. Nothing of torch is needed to read or use it.
"""
from __future__ import annotations

import datetime as _dt
import io
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ArtifactError, DataError
from ..io import atomic_path, sha256_file
from ..runtime.images import IMAGE_SUFFIXES, list_images, read_image
from ..runtime.meta import read_sidecar, sidecar_path, write_sidecar
from .scores import IMAGE_STATS, image_stats

PROFILE_FORMAT = "edgekit-drift/1"
EMBED_DIMS = 16
CONF_BINS = 5
MIN_IMAGES = 8  # fewer profile images give no usable reference
KEY = "drift_profile"


@dataclass
class Profile:
    """Per-image rows of the reference set, and how a frame is turned into such a row."""

    names: list[str]
    conf: float  # the detection threshold the rows were taken at
    edges: np.ndarray  # inner confidence-bin edges (CONF_BINS - 1 or fewer)
    stats: np.ndarray  # (n, 4) image statistics
    conf_counts: np.ndarray  # (n, bins) detections per confidence bin
    class_counts: np.ndarray  # (n, nc + 1) detections per class, last column 1 for an image without detection
    proj: np.ndarray | None = None  # (channels, EMBED_DIMS) projection of the pooled backbone
    emb: np.ndarray | None = None  # (n, EMBED_DIMS)

    @property
    def images(self) -> int:
        return len(self.stats)

    def row(self, embedding, scores, class_ids, stats) -> tuple:
        """One frame as a profile row: (projected embedding or None, conf-bin counts, class counts, statistics)."""
        scores = np.asarray(scores, np.float64)
        keep = scores >= self.conf
        conf_counts = np.bincount(np.searchsorted(self.edges, scores[keep], side="right"),
                                  minlength=len(self.edges) + 1)
        cls = np.bincount(np.asarray(class_ids, np.int64)[keep], minlength=len(self.names) + 1)[:len(self.names) + 1]
        cls[-1] = int(not keep.any())
        emb = None
        if embedding is not None and self.proj is not None and np.shape(embedding)[-1] == self.proj.shape[0]:
            emb = np.asarray(embedding, np.float64).reshape(-1) @ self.proj
        return emb, conf_counts, cls, np.asarray(stats, np.float64)

    def summary(self) -> dict:
        """What the sidecar shows of it: per-class detection rate, confidence shares, image statistics."""
        n = max(self.images, 1)
        shares = self.conf_counts.sum(0) / max(self.conf_counts.sum(), 1)
        return {"images": self.images, "conf": self.conf,
                "detections_per_image": round(float(self.class_counts[:, :-1].sum()) / n, 4),
                "empty_image_rate": round(float(self.class_counts[:, -1].sum()) / n, 4),
                "class_rate": {name: round(float(c) / n, 4)
                               for name, c in zip(self.names, self.class_counts[:, :-1].sum(0)) if c},
                "confidence": {"edges": [round(float(e), 4) for e in self.edges],
                               "shares": [round(float(s), 4) for s in shares]},
                "image_stats": {k: {"mean": round(float(self.stats[:, i].mean()), 4),
                                    "std": round(float(self.stats[:, i].std()), 4)}
                                for i, k in enumerate(IMAGE_STATS)},
                "embedding_dims": None if self.emb is None else int(self.emb.shape[1])}

    def arrays(self) -> dict:
        out = {"edges": self.edges, "stats": self.stats, "conf_counts": self.conf_counts,
               "class_counts": self.class_counts}
        if self.emb is not None:
            out.update(proj=self.proj, emb=self.emb)
        return out


def projection(channels: int, dims: int = EMBED_DIMS, seed: int = 0) -> np.ndarray:
    """A fixed random (channels, dims) matrix with orthonormal columns (stored with the profile, not regenerated)."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((channels, min(dims, channels))))
    return q


def conf_edges(scores: np.ndarray, conf: float) -> np.ndarray:
    """Inner edges of CONF_BINS confidence bins: the quintiles of the profile's confidences (equal shares)."""
    if len(scores) < 2 * CONF_BINS:
        return np.linspace(conf, 1.0, CONF_BINS + 1)[1:-1]
    return np.unique(np.quantile(scores, np.linspace(0, 1, CONF_BINS + 1)[1:-1]))


def profile_images(source) -> tuple[list[Path], str]:
    """The images a profile is computed on, and how to name them: a data.yaml / COCO json (or Dataset): its val
    split; a folder: the images in it."""
    from ..data import Dataset, load_dataset

    if not isinstance(source, Dataset):
        p = Path(source)
        if p.is_dir():
            found = list_images(p)
            if not found:
                raise DataError(p, f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
            return found, str(p.resolve())
        source = load_dataset(p)
    split = "val" if "val" in source.split_paths else next(iter(source.split_paths))
    return [s.image for s in source.samples(split)], f"{source.source} ({split} split)"


def build_profile(engine, images: list[Path], log=None) -> Profile:
    """Run the images through the engine at its threshold and collect the rows (one image per call, as served)."""
    if len(images) < MIN_IMAGES:
        raise DataError(images[0].parent if images else Path("."),
                        f"a drift profile needs at least {MIN_IMAGES} images, got {len(images)}")
    embs, stats, dets = [], [], []
    for p in images:
        im = read_image(p)
        blob, infos = engine.preprocess([im])
        raw, emb = engine.infer_embed(blob)
        d = engine.postprocess(raw, infos)[0]
        dets.append((np.asarray(d.scores, np.float64), np.asarray(d.class_ids, np.int64)))
        stats.append(image_stats(im))
        embs.append(None if emb is None else np.asarray(emb[0], np.float64))
    scores = np.concatenate([s for s, _ in dets]) if dets else np.zeros(0)
    proj = projection(len(embs[0])) if embs[0] is not None else None
    prof = Profile(names=list(engine.names), conf=float(engine.conf), edges=conf_edges(scores, engine.conf),
                   stats=np.zeros((0, 4)), conf_counts=np.zeros((0, 0)), class_counts=np.zeros((0, 0)), proj=proj)
    rows = [prof.row(e, s, c, st) for e, (s, c), st in zip(embs, dets, stats)]
    prof.stats = np.stack([r[3] for r in rows])
    prof.conf_counts = np.stack([r[1] for r in rows])
    prof.class_counts = np.stack([r[2] for r in rows])
    prof.emb = np.stack([r[0] for r in rows]) if proj is not None else None
    if log:
        log(f"drift profile: {len(images)} images, {int(prof.class_counts[:, :-1].sum())} detections at conf "
            f"{engine.conf:g}, " + (f"embedding from {proj.shape[0]} pooled channels" if proj is not None
                                     else "no embedding output"))
    return prof


def profile_file(artifact) -> Path:
    """model.onnx (or its folder) -> model.drift.npz beside the model file and its sidecar."""
    side = sidecar_path(artifact)
    return side.with_name(f"{side.stem}.drift.npz")


def save_profile(artifact, prof: Profile, source: str) -> dict:
    """Write the rows beside the model file and the summary into its sidecar; returns the new sidecar."""
    target = profile_file(artifact)
    buf = io.BytesIO()
    np.savez(buf, **prof.arrays())
    with atomic_path(target) as t:
        Path(t).write_bytes(buf.getvalue())
    doc = read_sidecar(artifact)
    doc.pop("format", None)
    doc[KEY] = {"format": PROFILE_FORMAT, "file": target.name, "sha256": sha256_file(target), "source": source,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **prof.summary()}
    write_sidecar(artifact, doc)
    return read_sidecar(artifact)


def attach_profile(artifact, source, log=None, backend: str | None = None, device: str = "cpu") -> dict:
    """Compute the profile of `source` (see profile_images) through the artifact and store it with it."""
    from ..runtime import Engine

    images, label = profile_images(source)
    with Engine(artifact, device=device, backend=backend, allow_failed=True) as eng:
        prof = build_profile(eng, images, log)
    return save_profile(artifact, prof, label)


def load_profile(artifact, meta_raw: dict | None = None) -> Profile | None:
    """The profile an artifact carries; None when its sidecar has none. A named file that is missing or altered
    is an ArtifactError (never a silently different reference)."""
    doc = meta_raw if meta_raw is not None else read_sidecar(artifact)
    rec = doc.get(KEY) if isinstance(doc, dict) else None
    if not rec:
        return None
    side = sidecar_path(artifact)
    if not isinstance(rec, dict) or rec.get("format") != PROFILE_FORMAT or not isinstance(rec.get("file"), str):
        raise ArtifactError(f"{side}: key '{KEY}': expected an {PROFILE_FORMAT} record naming its .npz file")
    path = side.parent / Path(rec["file"]).name
    if not path.is_file():
        raise ArtifactError(f"{side}: key '{KEY}.file': {path.name} is not beside the model (copy it with the "
                            f"artifact)")
    if rec.get("sha256") and sha256_file(path) != rec["sha256"]:
        raise ArtifactError(f"{path}: its sha256 does not match the one in {side.name} (key '{KEY}.sha256')")
    try:
        with np.load(path, allow_pickle=False) as d:
            a = {k: d[k] for k in d.files}
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{path}: not a readable drift profile ({e})") from None
    names = doc.get("names") or []
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names, key=int)]
    return Profile(names=list(names), conf=float(rec["conf"]), edges=a["edges"], stats=a["stats"],
                   conf_counts=a["conf_counts"], class_counts=a["class_counts"], proj=a.get("proj"), emb=a.get("emb"))


def carry_profile(src_artifact, dst_model: Path, doc: dict) -> dict:
    """The same profile for an artifact converted from another with the same graph (ONNX -> OpenVINO IR): its
    .npz copied beside dst_model, its record kept in `doc`; a doc without one is returned unchanged."""
    rec = doc.get(KEY)
    if not rec:
        return doc
    src = sidecar_path(src_artifact).parent / rec["file"]
    dst = profile_file(Path(dst_model))
    shutil.copy2(src, dst)
    return {**doc, KEY: {**rec, "file": dst.name, "carried_from": str(Path(src_artifact).name)}}
