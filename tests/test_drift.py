"""Issue M: drift tracking after deployment (profile with the artifact, serve's rolling windows, monitor, frames).

Out-of-domain frames are the demo val images darkened and blurred (written in tmp); in-domain frames are the demo
val images themselves, the profile's own split.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from treesum import tree_sha256

ROOT = Path(__file__).resolve().parents[1]
WINDOW = 16


def _val() -> list[Path]:
    from edgekit.assets import demo_images

    return demo_images()


def _ood(src: Path, dst: Path) -> Path:
    """The image darkened to 30 % and blurred: another camera's night, out of the profile's domain."""
    import cv2

    im = cv2.imread(str(src))
    cv2.imwrite(str(dst), cv2.GaussianBlur((im * 0.3).astype(np.uint8), (9, 9), 0))
    return dst


@pytest.fixture(scope="module")
def profiled(onnx320, tmp_path_factory) -> Path:
    """The bundled COCO YOLOv8n at 320 (with its pooled-backbone output) and the demo val split's profile."""
    from edgekit.assets import demo_data
    from edgekit.drift import attach_profile

    d = tmp_path_factory.mktemp("profiled")
    for p in onnx320.parent.glob("model.*"):
        shutil.copy2(p, d / p.name)
    attach_profile(d / "model.onnx", demo_data())
    return d / "model.onnx"


@pytest.fixture(scope="module")
def ood_frames(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("ood")
    return [_ood(p, d / p.name) for p in _val()[:WINDOW]]


def _run(*args, timeout=300):
    import os

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "edgekit", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


# --- scores ----------------------------------------------------------------------------------------------------------

def test_psi_is_zero_for_equal_shares_and_grows_with_the_shift():
    """PSI: 0 for the same shares whatever the counts, positive and growing as mass moves, finite on empty bins."""
    from edgekit.drift.scores import psi

    assert psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0, abs=1e-12)
    small, large = psi([10, 10, 10], [12, 10, 8]), psi([10, 10, 10], [25, 4, 1])
    assert 0 < small < large
    assert np.isfinite(psi([10, 10, 0], [0, 0, 5]))
    with pytest.raises(ValueError):
        psi([0, 0], [1, 1])


def test_frechet_distance_is_zero_on_itself_and_counts_a_mean_shift():
    from edgekit.drift.scores import frechet_distance

    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 8))
    mu, s = x.mean(0), np.cov(x, rowvar=False)
    assert frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(mu + 2, s, mu, s) == pytest.approx(4 * 8, rel=1e-6)  # ||shift||^2, same covariance


def _frame(rng):
    """One synthetic in-domain frame: (embedding, detection scores, classes, image statistics)."""
    k = rng.integers(1, 6)
    return (rng.standard_normal(32), rng.uniform(0.25, 1.0, k), rng.choice(3, k, p=[0.5, 0.3, 0.2]),
            np.array([rng.normal(110, 15), rng.normal(60, 8), rng.normal(3.3, 0.2), 416.0]))


def _synthetic_profile(n=64, seed=0):
    from edgekit.drift.profile import Profile, projection

    rng = np.random.default_rng(seed)
    prof = Profile(["a", "b", "c"], 0.25, np.array([0.4, 0.55, 0.7, 0.85]), np.zeros((0, 4)), np.zeros((0, 5)),
                   np.zeros((0, 4)), projection(32, 8))
    rows = [prof.row(*_frame(rng)) for _ in range(n)]
    prof.emb, prof.conf_counts, prof.class_counts, prof.stats = (np.stack([r[i] for r in rows]) for i in range(4))
    return prof, rng


def test_verdict_ok_on_in_domain_rows_and_drift_on_dark_frames_naming_what_moved():
    """The verdict is the worst level of any score; 'moved' says which score and how far (window vs profile)."""
    from edgekit.drift.tracker import DriftTracker

    prof, rng = _synthetic_profile()
    t = DriftTracker(prof, window=16, every=1)
    assert t.verdict()["verdict"] == "collecting"
    for _ in range(16):  # new frames from the profile's own distribution: in domain
        v = t.add(*_frame(rng))
    assert v["verdict"] == "ok", v
    for _ in range(16):
        e, sc, cl, st = _frame(rng)
        v = t.add(e, sc, cl, st * [0.2, 0.3, 0.5, 1])
    assert v["verdict"] == "drift"
    moved = {m["score"]: m for m in v["moved"]}
    assert {"brightness", "contrast"} <= set(moved)
    assert moved["brightness"]["window_mean"] < moved["brightness"]["profile_mean"]
    assert all(m["value"] >= m["warn"] for m in v["moved"])


def test_thresholds_have_floors_and_drift_above_warn():
    from edgekit.drift.tracker import FLOORS, thresholds

    prof, _ = _synthetic_profile()
    lim = thresholds(prof, 16)
    for k, (warn, drift) in lim.items():
        assert drift > warn > 0
        if k in FLOORS:
            assert warn >= FLOORS[k][0] and drift >= FLOORS[k][1]


# --- artifacts with and without the embedding, and without a profile ------------------------------------------------

def test_export_adds_the_pooled_backbone_output_and_backends_pick_detections_by_name(onnx320, tmp_path):
    """The export's second output leaves detections unchanged; an artifact without it (stripped) loads and runs."""
    from edgekit import Engine
    from edgekit.runtime.embedding import EMBED_OUTPUT, strip_embedding
    from edgekit.runtime.meta import read_sidecar

    assert read_sidecar(onnx320)["embedding"]["output"] == EMBED_OUTPUT
    for p in onnx320.parent.glob("model.*"):
        shutil.copy2(p, tmp_path / p.name)
    bare = tmp_path / "model.onnx"
    assert strip_embedding(bare) and not strip_embedding(bare)
    img = _val()[0]
    backends = ["onnxruntime"] + (["openvino"] if _has("openvino") else [])
    for b in backends:
        with Engine(onnx320, backend=b) as full, Engine(bare, backend=b) as plain:
            assert full.has_embedding and not plain.has_embedding
            blob, _ = full.preprocess([full.decode(img)])
            raw, emb = full.infer_embed(blob)
            assert emb.shape == (1, read_sidecar(onnx320)["embedding"]["channels"])
            np.testing.assert_allclose(raw, plain.infer(blob), atol=1e-4)
            assert plain.infer_embed(blob)[1] is None
            a, c = full(img), plain(img)
            np.testing.assert_array_equal(a.class_ids, c.class_ids)


def _has(mod):
    import importlib.util

    return importlib.util.find_spec(mod) is not None


def test_monitor_without_profile_says_no_profile(onnx320, tmp_path):
    """An artifact without a profile: monitor refuses with 'no profile' (exit 2), nothing invented or written."""
    frames = tmp_path / "frames"
    frames.mkdir()
    for p in _val()[:4]:
        shutil.copy2(p, frames / p.name)
    before = tree_sha256(frames)
    r = _run("monitor", onnx320, frames, "--plot", tmp_path / "p.png")
    assert r.returncode == 2, r.stderr
    assert "no profile" in r.stderr and str(onnx320) in r.stderr
    assert not (tmp_path / "p.png").exists() and tree_sha256(frames) == before


def test_profile_with_a_missing_or_altered_file_is_an_error(profiled, tmp_path):
    from edgekit.drift import load_profile
    from edgekit.errors import ArtifactError

    for p in profiled.parent.glob("model.*"):
        shutil.copy2(p, tmp_path / p.name)
    npz = tmp_path / "model.drift.npz"
    npz.write_bytes(npz.read_bytes()[:-1] + b"x")
    with pytest.raises(ArtifactError, match="sha256 does not match"):
        load_profile(tmp_path / "model.onnx")
    npz.unlink()
    with pytest.raises(ArtifactError, match="model.drift.npz is not beside the model"):
        load_profile(tmp_path / "model.onnx")


def test_profile_on_an_artifact_without_embedding_tracks_the_rest(profiled, tmp_path):
    """Converters that drop the second output (ncnn, LiteRT): the profile and tracking go on without Fréchet."""
    from edgekit import Engine
    from edgekit.assets import demo_data
    from edgekit.drift import DriftTracker, attach_profile, load_profile
    from edgekit.drift.scores import image_stats
    from edgekit.runtime.embedding import strip_embedding

    for p in profiled.parent.glob("model.*"):
        if p.suffix != ".npz":
            shutil.copy2(p, tmp_path / p.name)
    strip_embedding(tmp_path / "model.onnx")
    doc = attach_profile(tmp_path / "model.onnx", demo_data())
    assert doc["drift_profile"]["embedding_dims"] is None
    prof = load_profile(tmp_path / "model.onnx")
    t = DriftTracker(prof, window=4, every=1, has_embedding=False)
    with Engine(tmp_path / "model.onnx") as e:
        for img in _val()[:4]:
            im = e.decode(img)
            d = e(im)
            v = t.add(None, d.scores, d.class_ids, image_stats(im))
    assert v["scores"]["frechet"] is None and v["scores"]["brightness"] is not None
    assert "frechet" not in t.limits


def test_openvino_conversion_carries_the_profile(profiled, tmp_path):
    pytest.importorskip("openvino")
    from edgekit import Engine
    from edgekit.drift import load_profile
    from edgekit.export.openvino import onnx_to_openvino

    folder = onnx_to_openvino(profiled, tmp_path / "ir", log=lambda *a: None)
    assert (folder / "model.drift.npz").is_file()
    prof = load_profile(folder / "model.xml")
    assert prof.images == load_profile(profiled).images
    with Engine(folder) as e:
        assert e.has_embedding


# --- serve --------------------------------------------------------------------------------------------------------

def _gauges(text: str, name: str) -> dict:
    out = {}
    for line in text.splitlines():
        m = re.match(rf'{name}\{{(.*)\}} (\S+)$', line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            out[tuple(sorted((k, v) for k, v in labels.items() if k != "model"))] = float(m.group(2))
    return out


def test_serve_drift_ok_then_drift_within_a_window_then_ok_again(profiled, ood_frames, tmp_path):
    """Done-when of issue M: in-domain frames -> ok; out-of-domain frames -> a score crosses its drift threshold
    within N frames and /metrics shows it; in-domain frames again -> ok. --drift-save kept frames of drifted windows
    only, under its cap."""
    pytest.importorskip("fastapi")
    from test_serve import _raw_infer, server, status

    val = _val()
    saved = tmp_path / "saved"
    with server(profiled, "--drift-window", str(WINDOW), "--max-batch", "1", "--drift-save", saved,
                "--drift-save-rate", "1", "--drift-save-max-mb", "2") as (port, _):
        def drift():
            code, _, body = status(port, "GET", "/v2/models/model/drift")
            assert code == 200
            return json.loads(body)

        assert drift()["verdict"] == "collecting"
        for p in val[:WINDOW]:
            assert _raw_infer(port, p.read_bytes())[0] == 200
        v = drift()
        assert v["verdict"] == "ok", v
        for p in ood_frames:  # N out-of-domain frames
            assert _raw_infer(port, p.read_bytes())[0] == 200
        v = drift()
        assert v["verdict"] == "drift", v
        assert v["moved"] and v["moved"][0]["value"] >= v["moved"][0]["warn"]
        text = status(port, "GET", "/metrics")[2].decode()
        score, limit = _gauges(text, "edgekit_drift_score"), _gauges(text, "edgekit_drift_threshold")
        crossed = [k for k, s in score.items() if s >= limit.get(tuple(sorted(k + (("level", "drift"),))), np.inf)]
        assert crossed, (score, limit)
        assert _gauges(text, "edgekit_drift_verdict")[()] == 2
        during = len(list(saved.glob("*.png")))
        assert 0 < during < WINDOW  # the window turned drift part-way through the out-of-domain frames
        for p in val[WINDOW:2 * WINDOW]:
            assert _raw_infer(port, p.read_bytes())[0] == 200
        assert drift()["verdict"] == "ok"
        text = status(port, "GET", "/metrics")[2].decode()
        assert _gauges(text, "edgekit_drift_verdict")[()] == 0
    pngs = list(saved.glob("*.png"))
    assert len(pngs) < 2 * WINDOW and sum(p.stat().st_size for p in pngs) <= 2 * 2 ** 20
    assert len((saved / "frames.jsonl").read_text().splitlines()) == len(pngs)


def test_serve_without_profile_says_no_profile_and_serves(onnx320):
    pytest.importorskip("fastapi")
    from test_serve import _raw_infer, server, status

    with server(onnx320) as (port, _):
        assert _raw_infer(port, _val()[0].read_bytes())[0] == 200
        code, _, body = status(port, "GET", "/v2/models/model/drift")
        assert code == 200 and json.loads(body)["verdict"] == "no profile"
        assert "edgekit_drift_score" not in status(port, "GET", "/metrics")[2].decode()


def test_serve_refuses_drift_save_inside_an_input(profiled, tmp_path):
    """Saved frames never go inside an input: --drift-save inside an artifact folder (an OpenVINO IR) or over the
    artifact file is refused before anything is loaded or written."""
    from test_serve import free_port

    ir = tmp_path / "ir"
    ir.mkdir()
    for p in profiled.parent.glob("model.*"):
        shutil.copy2(p, ir / p.name)
    before = tree_sha256(ir)
    for artifact, target in ((ir, ir / "frames"), (ir / "model.onnx", ir / "model.onnx")):
        r = _run("serve", artifact, "--port", free_port(), "--drift-save", target, timeout=60)
        assert r.returncode == 2, r.stderr
        assert "--drift-save" in r.stderr and str(ir) in r.stderr
    assert tree_sha256(ir) == before


# --- frames from drifted windows -> quantize --calib-from ------------------------------------------------------------

def test_frame_saver_samples_drifted_frames_under_its_cap_and_feeds_calib_from(tmp_path):
    """Only frames of drifted windows, never past the disk cap; the folder is what --calib-from reads."""
    from edgekit.data.calibration import CalibrationWarning, calibration_from_folder
    from edgekit.drift.frames import MANIFEST, FrameSaver

    rng = np.random.default_rng(0)
    im = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)  # noise: ~37 kB as PNG
    saver = FrameSaver(tmp_path / "saved", rate=1.0, max_mb=0.1)
    assert saver.offer(im, {"verdict": "ok"}) is None and saver.offer(im, {"verdict": "warn"}) is None
    kept = [saver.offer(im, {"verdict": "drift", "scores": {"brightness": 3.0}}) for _ in range(10)]
    saved = sorted((tmp_path / "saved").glob("*.png"))
    assert 0 < len(saved) < 10 and saver.full and kept[-1] is None
    assert sum(p.stat().st_size for p in saved) <= 0.1 * 2 ** 20
    assert len((tmp_path / "saved" / MANIFEST).read_text().splitlines()) == len(saved)
    half = FrameSaver(tmp_path / "sampled", rate=0.5, max_mb=10)
    n = sum(half.offer(im, {"verdict": "drift"}) is not None for _ in range(40))
    assert 5 < n < 35  # sampled, not the full stream
    with pytest.warns(CalibrationWarning):  # few frames: said, and calibrated on with --force
        calib = calibration_from_folder(tmp_path / "saved", (160, 160), 300, 0, force=True)
    assert sorted(calib.items) == saved  # every saved frame, nothing else (frames.jsonl, the lock)


# --- monitor ----------------------------------------------------------------------------------------------------------

def test_monitor_marks_the_domain_switch_within_one_window(profiled, tmp_path):
    """Done-when of issue M: a folder that switches domain halfway; the switch to drift is marked within N frames."""
    frames = tmp_path / "frames"
    frames.mkdir()
    val = _val()
    half = 24
    for k in range(half):
        shutil.copy2(val[k], frames / f"{k:03d}.jpg")
    for k in range(half):
        _ood(val[k], frames / f"{half + k:03d}.jpg")
    before = tree_sha256(frames)
    out = tmp_path / "out"
    out.mkdir()
    r = _run("monitor", profiled, frames, "--window", "8", "--json", out / "m.json", "--plot", out / "m.png")
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "m.json").read_text())
    assert res["frames"] == 2 * half
    to_drift = [s for s in res["switches"] if s["to"] == "drift"]
    assert to_drift and half <= to_drift[0]["frame"] < half + 8, res["switches"]
    assert all(s["verdict"] in ("collecting", "ok") for s in res["series"][:half])
    assert (out / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert tree_sha256(frames) == before


@pytest.mark.slow
def test_readme_drift_section_runs_as_written(tmp_path):
    """The README's drift example (export --data, then monitor), unchanged, in a folder laid out like the
    repository: the artifact gets its profile, monitor writes its plot and JSON, and the demo val frames stay ok."""
    import shlex

    from test_readme import _blocks, _commands, _section

    pytest.importorskip("ultralytics")
    (tmp_path / "edgekit").mkdir()
    (tmp_path / "edgekit" / "assets").symlink_to(ROOT / "edgekit" / "assets")
    for cmd in _commands(_blocks(_section("After deployment: drift and re-calibration"), "bash")[0]):
        argv = shlex.split(cmd)
        assert argv[0] == "edgekit", cmd
        r = subprocess.run([sys.executable, "-m", "edgekit", *argv[1:]], cwd=tmp_path, capture_output=True,
                           text=True, timeout=600, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
        assert r.returncode == 0, (cmd, r.stderr)
    doc = json.loads((tmp_path / "runs" / "drift" / "model.json").read_text())
    assert doc["drift_profile"]["images"] == 32 and (tmp_path / "runs" / "drift" / "model.drift.npz").is_file()
    res = json.loads((tmp_path / "runs" / "drift.json").read_text())
    assert res["frames"] == 32 and not [s for s in res["switches"] if s["to"] == "drift"]
    assert (tmp_path / "runs" / "drift.png").read_bytes()[:4] == b"\x89PNG"


def test_monitor_reads_a_video_and_names_what_it_cannot_read(tmp_path):
    """FRAMES_DIR|VIDEO: a video's frames in order; a file that is neither is one error naming it."""
    import cv2

    from edgekit.drift.monitor import frames
    from edgekit.errors import DataError

    video = tmp_path / "cam.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    if not w.isOpened():
        pytest.skip("this OpenCV build writes no MJPG video")
    for k in range(6):
        w.write(np.full((48, 64, 3), 40 * k, np.uint8))
    w.release()
    got = list(frames(video))
    assert [n for n, _ in got] == [f"frame {k}" for k in range(6)] and got[0][1].shape == (48, 64, 3)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="notes.txt.*not a folder or a video"):
        list(frames(tmp_path / "notes.txt"))


def test_a_build_for_a_converter_without_second_outputs_gets_the_onnx_without_it(profiled, tmp_path):
    """Backends whose converters keep one output (ncnn, LiteRT: carries_embedding False) are handed the ONNX without
    the pooled-backbone output; the sidecar still names the ONNX as given (its sha256)."""
    import onnx

    from edgekit.io import sha256_file
    from edgekit.runtime import Engine
    from edgekit.runtime.backends.onnxruntime import OnnxRuntimeBackend
    from edgekit.runtime.embedding import EMBED_OUTPUT
    from edgekit.runtime.meta import read_sidecar

    class OneOutput(OnnxRuntimeBackend):  # stands for ncnn / LiteRT: its "conversion" is a copy
        name = "one-output"
        builds = ("fp32",)
        carries_embedding = False

        @classmethod
        def build_impl(cls, source, precision, folder, meta, calib=None, log=print, **opts):
            shutil.copy2(source, folder / "model.onnx")
            return folder / "model.onnx", {}

    built = OneOutput.build(profiled, "fp32", tmp_path / "one", log=lambda *a: None)
    assert [o.name for o in onnx.load(str(built)).graph.output] == ["output0"]
    assert EMBED_OUTPUT in [o.name for o in onnx.load(str(profiled)).graph.output]  # the input is untouched
    assert read_sidecar(built)["source"]["sha256"] == sha256_file(profiled)
    with Engine(built, backend="onnxruntime") as e:
        assert not e.has_embedding and len(e(_val()[0])) > 0

