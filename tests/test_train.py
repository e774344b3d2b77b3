"""Fine-tuning strategies: parsing, module groups, freezing, BN statistics, LoRA merge, schedule, resume, export."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgekit.errors import EdgekitError
from edgekit.train import Stage, parse_strategy

IMGSZ, BATCH = 64, 16
QUIET = dict(log=lambda *a: None)


def run_cli(capsys, *argv):
    from edgekit.cli.main import main

    code = main(list(map(str, argv)))
    out = capsys.readouterr()
    return code, out.out, out.err


# --- strategy syntax --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, kind, stages", [
    ("scratch", "scratch", (Stage(0, "none"),)),
    ("full", "full", (Stage(0, "none"),)),
    ("head", "head", (Stage(0, "neck"),)),
    ("freeze:10", "freeze", (Stage(0, 10),)),
    ('schedule:"0:backbone,5:neck,10:none"', "schedule", (Stage(0, "backbone"), Stage(5, "neck"), Stage(10, "none"))),
    ("schedule:0:4, 3:none", "schedule", (Stage(0, 4), Stage(3, "none"))),
    ("lora", "lora", (Stage(0, "backbone"),)),
    ("lora:4:8", "lora", (Stage(0, "backbone"),)),
    ("auto", "auto", (Stage(0, "none"),)),
])
def test_parse_strategy(text, kind, stages):
    s = parse_strategy(text)
    assert s.kind == kind and s.stages == stages
    assert parse_strategy(s.spec) == s  # canonical text parses back
    assert s.pretrained == (kind != "scratch")


def test_parse_lora_rank_and_schedule_lookup():
    s = parse_strategy("lora:4:8")
    assert (s.lora_rank, s.lora_alpha, s.spec) == (4, 8.0, "lora:4:8")
    assert parse_strategy("lora").lora_rank == 8
    sch = parse_strategy("schedule:0:backbone,5:neck,10:none")
    assert [sch.stage_at(e).freeze for e in (0, 4, 5, 9, 10, 99)] == ["backbone"] * 2 + ["neck"] * 2 + ["none"] * 2
    assert parse_strategy("schedule:2:backbone").stage_at(0).freeze == "none"


@pytest.mark.parametrize("text, message", [
    ("foo", "strategy 'foo': unknown strategy 'foo' (expected scratch, full, head, freeze:N"),
    ("freeze", "strategy 'freeze': 'freeze' needs a module count, e.g. freeze:10"),
    ("freeze:abc", "unknown group 'abc' (groups: backbone, neck, none, or a module count N)"),
    ("schedule:", "'schedule' needs stages"),
    ("schedule:0:backbone,0:none", "stage '0:none': epochs must increase (after epoch 0)"),
    ("schedule:5:none,2:backbone", "stage '2:backbone': epochs must increase (after epoch 5)"),
    ("schedule:x:none", "stage 'x:none': epoch 'x' is not an integer"),
    ("schedule:3", "stage '3' is not EPOCH:GROUP"),
    ("schedule:0:head", "freezing 'head' freezes every group and leaves nothing to train"),
    ("head:2", "'head' takes no argument"),
    ("lora:0", "LoRA rank must be >= 1"),
    ("lora:r", "LoRA rank must be an integer"),
])
def test_parse_strategy_errors(text, message):
    with pytest.raises(EdgekitError) as e:
        parse_strategy(text)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_cli_bad_strategy_and_missing_weights(capsys, demo_data, weights, tmp_path):
    code, _, err = run_cli(capsys, "train", weights, "--data", demo_data, "--strategy", "schedule:0:foo",
                           "-o", tmp_path / "x")
    assert code == 2 and err.strip() == ("edgekit train: error: strategy 'schedule:0:foo': unknown group 'foo' "
                                         "(groups: backbone, neck, none, or a module count N)")
    code, _, err = run_cli(capsys, "train", tmp_path / "nope.pt", "--data", demo_data, "-o", tmp_path / "x")
    assert code == 2 and "nope.pt: weights file not found (edgekit never downloads weights" in err
    code, _, err = run_cli(capsys, "train", weights, "--data", demo_data, "--resume", "-o", tmp_path / "empty")
    assert code == 2 and "last.pt: nothing to resume" in err


def test_import_edgekit_train_pulls_no_torch():
    import subprocess
    import sys

    code = "import sys, edgekit, edgekit.train, edgekit.cli.train; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


# --- groups, freezing, BN ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ul():
    pytest.importorskip("ultralytics")
    from edgekit._ultralytics import ultralytics

    return ultralytics()


def _model(arch="yolov8n.yaml", nc=5):
    from ultralytics.nn.tasks import DetectionModel

    return DetectionModel(arch, nc=nc, verbose=False)


@pytest.mark.parametrize("arch, nb, n", [("yolov8n.yaml", 10, 23), ("yolo11n.yaml", 11, 24)])
def test_module_groups_from_yaml(ul, arch, nb, n):
    from ultralytics.nn.tasks import yaml_model_load

    from edgekit.train.freeze import frozen_indices, group_matcher, module_groups

    g = module_groups(yaml_model_load(arch))
    assert g == {"backbone": list(range(nb)), "neck": list(range(nb, n - 1)), "head": [n - 1]}
    model = _model(arch)
    assert module_groups(model) == g and type(model.model[g["head"][0]]).__name__ == "Detect"
    match = group_matcher(model)
    assert (match(0), match(nb), match(n - 1)) == ("backbone", "neck", "head")
    assert frozen_indices(g, "neck") == set(range(n - 1)) and frozen_indices(g, "none") == set()
    assert frozen_indices(g, "backbone") == set(range(nb)) and frozen_indices(g, 3) == {0, 1, 2}


def test_freeze_unfreeze_and_bn_statistics_kept(ul):
    import torch

    from edgekit.train.freeze import batchnorms_in, freeze, freeze_bn, module_groups, module_index, unfreeze

    model = _model()
    g = module_groups(model)
    n = freeze(model, g, ["backbone"])
    for name, p in model.named_parameters():
        assert p.requires_grad == (module_index(name) not in g["backbone"] and ".dfl" not in name), name
    assert n == sum(p.numel() for p in model.parameters() if p.requires_grad)
    model.train()  # what Ultralytics does every epoch
    assert freeze_bn(model, g["backbone"]) > 0
    frozen_bn, neck_bn = batchnorms_in(model, g["backbone"]), batchnorms_in(model, g["neck"])
    before = [(m.running_mean.clone(), m.running_var.clone()) for m in frozen_bn + neck_bn]
    model(torch.rand(2, 3, 64, 64))
    after = [(m.running_mean, m.running_var) for m in frozen_bn + neck_bn]
    k = len(frozen_bn)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(before[:k], after[:k]))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(before[k:], after[k:]))
    assert unfreeze(model) == sum(p.numel() for n_, p in model.named_parameters() if ".dfl" not in n_)


# --- LoRA -------------------------------------------------------------------------------------------------------

def test_lora_conv_merge_is_exact():
    torch = pytest.importorskip("torch")
    from edgekit.train.lora import LoRAConv2d

    torch.manual_seed(0)
    base = torch.nn.Conv2d(8, 16, 3, 2, 1, bias=True)
    lora = LoRAConv2d(base, r=4, alpha=8)
    x = torch.randn(2, 8, 17, 19)
    assert torch.allclose(lora(x), base(x))  # zero-initialised up: starts as the base conv
    torch.nn.init.normal_(lora.lora_up.weight)
    merged = lora.merged()
    assert type(merged) is torch.nn.Conv2d and merged.stride == (2, 2)
    assert not torch.allclose(lora(x), base(x))
    assert torch.allclose(lora(x), merged(x), atol=1e-4)


def test_lora_model_merge_matches(ul):
    import torch

    from edgekit.train.freeze import module_groups, set_frozen
    from edgekit.train.lora import LoRAConv2d, apply_lora, has_lora, merge_lora

    torch.manual_seed(0)
    model = _model().eval()
    n = apply_lora(model, module_groups(model)["backbone"], r=4)
    assert n > 20 and has_lora(model)
    set_frozen(model, module_groups(model)["backbone"])
    trainable = [k for k, p in model.named_parameters() if p.requires_grad and k.startswith(("model.0.", "model.9."))]
    assert trainable and all("lora_" in k for k in trainable)  # adapters only, inside the frozen backbone
    for m in model.modules():
        if isinstance(m, LoRAConv2d):
            torch.nn.init.normal_(m.lora_up.weight, std=0.05)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        y0 = model(x)[0]
        assert merge_lora(model) == n and not has_lora(model)
        y1 = model(x)[0]
    assert torch.allclose(y0, y1, rtol=1e-3, atol=1e-3)


# --- training runs ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo_copy(tmp_path_factory, demo_data):
    """The bundled demo set (96 train / 32 val) in tmp, so Ultralytics' label caches stay out of the package."""
    dst = tmp_path_factory.mktemp("demo") / "demo"
    shutil.copytree(Path(demo_data).parent, dst, ignore=shutil.ignore_patterns("*.cache"))
    return dst / "data.yaml"


def _state(model, keys=None):
    sd = model.state_dict()
    return {k: v.detach().clone() for k, v in sd.items() if (keys is None or k in keys) and v.is_floating_point()}


@pytest.fixture(scope="module")
def schedule_run(ul, tmp_path_factory, demo_copy, weights):
    """schedule:0:backbone,1:none for 2 epochs, snapshotting the live model around each epoch."""
    from edgekit.train import train
    from edgekit.train.yolo import _unwrap

    snaps = {}

    def start(trainer):
        snaps["start"] = _state(_unwrap(trainer.model))

    def epoch_end(trainer):
        snaps[trainer.epoch] = _state(_unwrap(trainer.model))

    out = tmp_path_factory.mktemp("sched") / "schedule"
    info = train(weights, demo_copy, strategy="schedule:0:backbone,1:none", epochs=2, imgsz=IMGSZ, batch=BATCH,
                 device="cpu", out_dir=out, patience=50, workers=0,
                 callbacks={"on_train_start": start, "on_train_epoch_end": epoch_end}, **QUIET)
    return info, snaps, out


@pytest.mark.slow
def test_schedule_frozen_params_bit_identical_then_change(schedule_run):
    import torch

    from edgekit.train.freeze import module_index

    info, snaps, out = schedule_run
    start, e0, e1 = snaps["start"], snaps[0], snaps[1]
    backbone = [k for k in start if module_index(k) is not None and module_index(k) < 10]
    later = [k for k in start if module_index(k) is not None and 10 <= module_index(k) < 22]
    bn_stats = [k for k in backbone if k.endswith(("running_mean", "running_var"))]
    assert bn_stats and len(backbone) > 100
    assert all(torch.equal(start[k], e0[k]) for k in backbone)  # frozen epoch: weights and BN stats untouched
    assert not all(torch.equal(start[k], e0[k]) for k in later)  # the neck trained meanwhile
    changed = [k for k in backbone if not torch.equal(e0[k], e1[k]) and "weight" in k]
    assert len(changed) > 0.8 * len([k for k in backbone if "weight" in k])  # unfrozen: backbone trains
    assert not all(torch.equal(e0[k], e1[k]) for k in bn_stats)


def test_schedule_train_json(schedule_run):
    info, _, out = schedule_run
    doc = json.loads((out / "train.json").read_text())
    assert doc == json.loads(json.dumps(info))
    assert (out / "best.pt").exists() and doc["best"] == "best.pt"
    assert doc["strategy"] == "schedule:0:backbone,1:none" and doc["status"] == "done" and doc["epochs"] == 2
    assert [s["epoch"] for s in doc["schedule"]] == [0, 1]
    assert doc["schedule"][0]["frozen_groups"] == ["backbone"] and doc["schedule"][1]["frozen_groups"] == []
    tp = doc["trainable_params"]
    assert len(tp) == 2 and tp[0] < tp[1] and tp[0] == doc["schedule"][0]["trainable_params"]
    assert len(doc["epoch_s"]) == 2 and all(s > 0 for s in doc["epoch_s"])
    assert doc["gpu_hours"] == 0 and doc["cpu_hours"] > 0 and doc["cost_usd"] == 0 and doc["device"] == "cpu"
    assert 0 <= doc["map50_95"] <= doc["map50"] <= 1 and doc["imgsz"] == IMGSZ
    for key in ("wall_s", "weights_init", "data", "reasons"):
        assert key in doc


def test_optimizer_param_groups_per_module_group(ul, tmp_path, demo_copy, weights):
    """Backbone LR multiplier through param groups; all parameters present in the optimizer."""
    from edgekit.train.strategy import parse_strategy
    from edgekit.train.yolo import Plan

    model = _model()
    import torch

    opt = torch.optim.AdamW([{"params": [p for n, p in model.named_parameters() if "bias" in n], "lr": 0.01},
                             {"params": [p for n, p in model.named_parameters() if "bias" not in n], "lr": 0.01}])
    Plan(parse_strategy("full"), backbone_lr_mult=0.1, log=lambda *a: None).split_param_groups(opt, model)
    lrs = {(g["module_group"], round(g["lr"], 6)) for g in opt.param_groups}
    assert lrs == {("backbone", 0.001), ("neck", 0.01), ("head", 0.01)}
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


@pytest.mark.slow
def test_resume_after_kill_in_epoch_2(ul, tmp_path, demo_copy, weights, capsys):
    from edgekit.train import train

    out = tmp_path / "resume"
    seen = {"n": 0}

    def kill(trainer):
        if trainer.epoch == 1:
            seen["n"] += 1
            if seen["n"] == 3:
                raise KeyboardInterrupt("simulated kill during epoch 2")

    with pytest.raises(KeyboardInterrupt):
        train(weights, demo_copy, strategy="schedule:0:neck,1:none", epochs=2, imgsz=IMGSZ, batch=BATCH,
              out_dir=out, callbacks={"on_train_batch_start": kill}, **QUIET)
    doc = json.loads((out / "train.json").read_text())
    assert doc["status"] == "interrupted" and doc["epochs"] == 1 and (out / "last.pt").exists()
    assert not (out / "best.pt").exists()
    code, _, err = run_cli(capsys, "train", weights, "--data", demo_copy, "--resume", "--strategy", "full",
                           "-o", out)  # another strategy is refused
    assert code == 2 and "was trained with strategy 'schedule:0:neck,1:none', not 'full'" in err
    code, _, err = run_cli(capsys, "train", weights, "--data", demo_copy, "--resume", "--imgsz", IMGSZ,
                           "--batch", BATCH, "-o", out)
    assert code == 0, err
    doc = json.loads((out / "train.json").read_text())
    assert doc["status"] == "done" and doc["epochs"] == 2 and doc["strategy"] == "schedule:0:neck,1:none"
    assert [r["epoch"] for r in doc["epoch_records"]] == [1, 2]
    assert [s["frozen_groups"] for s in doc["schedule"]] == [["backbone", "neck"], []]  # re-derived at epoch 2
    assert doc["trainable_params"][0] < doc["trainable_params"][1]
    assert (out / "best.pt").exists() and doc["wall_s"] > doc["epoch_s"][1]
    assert "resuming" in err and "epoch 2/2" in err


@pytest.mark.slow
def test_lora_merges_and_exports_same_graph_as_full(ul, tmp_path, demo_copy, weights, schedule_run):
    onnx = pytest.importorskip("onnx")
    import torch

    from edgekit.export import export_onnx
    from edgekit.train import train

    out = tmp_path / "lora"
    info = train(weights, demo_copy, strategy="lora:4", epochs=1, imgsz=IMGSZ, batch=BATCH, out_dir=out, **QUIET)
    assert info["resolved_strategy"] == "lora:4" and info["epochs"] == 1
    ckpt = torch.load(out / "best.pt", map_location="cpu", weights_only=False)
    assert not any("lora_" in k for k in ckpt["model"].state_dict())  # merged before saving best.pt
    last = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    assert any("lora_" in k for k in last["model"].state_dict())  # last.pt keeps adapters for --resume

    def ops(path):
        g = onnx.load(str(path)).graph
        return sorted(n.op_type for n in g.node)

    full = export_onnx(schedule_run[2] / "best.pt", tmp_path / "full_onnx", imgsz=IMGSZ, parity_images=False,
                       **QUIET)
    lora = export_onnx(out / "best.pt", tmp_path / "lora_onnx", imgsz=IMGSZ, parity_images=False, **QUIET)
    assert ops(lora) == ops(full) and len(ops(lora)) > 100


# --- auto -------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_auto_rule(demo_data):
    from edgekit.advise.rule import choose, class_box_distance, closeness
    from edgekit.data import load_dataset
    from edgekit.data.coco_names import coco_overlap
    from edgekit.train.auto import auto_strategy

    assert coco_overlap(["Ambulance", "Bus", "Car", "Motorcycle", "Truck"]) == 0.8
    assert coco_overlap(["motorbike", "pedestrians", "PCB defect"]) == pytest.approx(2 / 3)
    d, why = class_box_distance(["scratch", "short"], [0.01, 0.02])
    assert d == 1.0 and any("tiny" in w for w in why)
    assert [closeness("moderate", x) for x in (0.2, 0.6, 0.9)] == ["near", "moderate", "far"]
    assert closeness("far", 0.0) == "far" and closeness("near", 1.0) == "near"
    assert choose(100, "near", 10)[0] == "head"
    assert choose(100, "far", 10)[0] == "schedule:0:backbone,5:none"
    assert choose(1000, "near", 9)[0] == "schedule:0:neck,3:backbone,6:none"
    assert choose(1000, "moderate", 9)[0] == "schedule:0:backbone,3:none"
    assert choose(10000, "near", 9)[0] == "full"
    assert choose(100, "near", 9, pretrained=False)[0] == "scratch"
    s, reasons = auto_strategy(load_dataset(demo_data), epochs=6)
    assert s.kind == "head" and reasons[-1] == "auto -> head" and any("80% of the 5 class names" in r for r in reasons)


@pytest.mark.slow
def test_auto_and_advise_pick_the_same_strategy(demo_data):
    """One rule: advise's first suggestion is what --strategy auto trains, on the same data and epochs."""
    import dataclasses

    pytest.importorskip("ultralytics")
    from edgekit.advise import advise
    from edgekit.data import load_dataset
    from edgekit.train.auto import auto_strategy

    ds = load_dataset(demo_data)
    for epochs in (3, 9):
        r = advise(ds, epochs=epochs, log=lambda *a: None)
        assert auto_strategy(ds, epochs)[0].spec == r["strategies"][0]
    # 400 copies of the same samples (300-3000 images): the rule's middle size band, the same choice on both sides
    many = dataclasses.replace(ds, _cache={**ds._cache, "train": (ds.samples("train") * 5)[:400]})
    r = advise(many, epochs=9, log=lambda *a: None)
    assert auto_strategy(many, 9)[0].spec == r["strategies"][0] == "schedule:0:neck,3:backbone,6:none"


# --- YOLO-NAS ---------------------------------------------------------------------------------------------------

def test_postprocess_nas_layout():
    """layout 'nas': (B, N, 4 + nc) rows of xyxy input pixels and class scores."""
    import numpy as np

    from edgekit.runtime.postprocess import postprocess
    from edgekit.runtime.preprocess import Letterbox

    raw = np.zeros((1, 3, 6), np.float32)
    raw[0, 0] = [10, 20, 50, 60, 0.9, 0.1]
    raw[0, 1] = [12, 21, 50, 61, 0.8, 0.0]  # overlaps the first, same class: suppressed
    raw[0, 2] = [100, 100, 120, 140, 0.0, 0.7]
    det = postprocess(raw, [Letterbox(0.5, 0, 10, (400, 400))], ["a", "b"], layout="nas")[0]
    assert det.class_ids.tolist() == [0, 1]
    assert np.allclose(det.boxes[0], [20, 20, 100, 100]) and np.allclose(det.scores, [0.9, 0.7])


def test_nas_missing_dependency_message():
    import importlib.util

    if importlib.util.find_spec("super_gradients") is not None:
        pytest.skip("super_gradients is installed")
    from edgekit.errors import MissingDependency
    from edgekit.train.nas import super_gradients

    with pytest.raises(MissingDependency, match="docker/install_nas.sh"):
        super_gradients()


@pytest.mark.slow
def test_nas_schedule_trains_and_exports(tmp_path, demo_copy):
    pytest.importorskip("super_gradients", reason="YOLO-NAS needs super-gradients: bash docker/install_nas.sh")
    from edgekit.data import load_dataset
    from edgekit.runtime.meta import read_sidecar
    from edgekit.train.nas import train_nas

    ds = load_dataset(demo_copy)
    subset = tmp_path / "data.yaml"  # 16 training images keep this to about a minute
    (tmp_path / "train.txt").write_text("\n".join(str(s.image) for s in ds.samples("train")[:16]))
    subset.write_text(json.dumps({"train": str(tmp_path / "train.txt"), "val": str(ds.split_paths["val"][0]),
                                  "names": ds.names}))
    info = train_nas(None, subset, strategy="schedule:0:backbone,1:none", epochs=2, imgsz=64, batch=8,
                     out_dir=tmp_path / "nas", **QUIET)
    assert info["epochs"] == 2 and [s["frozen_groups"] for s in info["schedule"]] == [["backbone"], []]
    assert info["trainable_params"][0] < info["trainable_params"][1]
    side = read_sidecar(tmp_path / "nas" / "model.onnx")
    assert side["output"]["layout"] == "nas" and side["output"]["shape"] == [1, 84, 4 + ds.nc]
    assert info["map50"] is not None


@pytest.mark.parametrize("device, gpus", [("cpu", []), ("mps", []), ("cuda", [0]), ("cuda:1", [1]), ("0", [0]),
                                          ("0,1", [0, 1]), ("cuda:0,1", [0, 1]), ("", None)])
def test_train_device_forms(device, gpus):
    """The devices a training run uses, parsed by runtime.devices plus Ultralytics' multi-GPU list form."""
    from edgekit.train.record import gpu_indices, n_gpus

    assert gpu_indices(device) == gpus
    if gpus is not None:
        assert n_gpus(device) == len(gpus)
