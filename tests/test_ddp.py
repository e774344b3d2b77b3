"""Multi-GPU training keeps the strategy: the plan reaches Ultralytics' DDP workers, rank 0's results come back.

No GPU here, so the worker side runs on CPU: Ultralytics' own generate_ddp_file writes the state and the worker
script, and a subprocess runs that script (with the environment torch.distributed.run gives a one-process launch)
up to the optimizer instead of training. The parent route runs end to end through torch.distributed.run with one
CPU worker.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

IMGSZ, BATCH, LR_MULT = 64, 2, 0.1  # batch 2: 2 batches per epoch on coco8's 4 train images, so re-warm-up shows
QUIET = dict(log=lambda *a: None)
MARK = "EDGEKIT-FIGURES "
WORKER_ENV = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}  # what torch.distributed.run sets, one process

# Run in the parent on its own trainer and in the worker on the rebuilt one: what the strategy did to the model.
FIGURES = '''
import json


def figures(trainer, epochs=(0, 1)):
    """Frozen module indices per epoch, optimizer groups (module group, lr, size), LoRA convs, re-warmed LRs."""
    from edgekit.train.freeze import module_index
    from edgekit.train.lora import LoRAConv2d
    from edgekit.train.yolo import _unwrap

    model = _unwrap(trainer.model)
    out = {"groups": [[g.get("module_group"), round(g["lr"], 10), len(g["params"])]
                      for g in trainer.optimizer.param_groups],
           "lora": sum(isinstance(m, LoRAConv2d) for m in model.modules()),
           "strategy": trainer.plan.strategy.spec if trainer.plan else None}
    for e in epochs:
        trainer.epoch = e
        trainer.run_callbacks("on_train_epoch_start")
        base = [(module_index(n), p.requires_grad) for n, p in model.named_parameters()
                if ".dfl" not in n and "lora_" not in n]
        out[f"frozen_{e}"] = sorted({i for i, _ in base} - {i for i, grad in base if grad})
        out[f"trainable_{e}"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    undo = trainer.plan.rewarm(trainer) if trainer.plan else []  # epoch 1, first batch
    out["rewarm"] = [[g["module_group"], round(g["lr"], 10)] for g, _ in undo]
    for g, lr in undo:
        g["lr"] = lr
    return out
'''
NO_PLAN = "import edgekit.train.ddp\nedgekit.train.ddp.adopt_plan = lambda trainer: None  # the worker before the fix\n"


@pytest.fixture(scope="module")
def ul():
    pytest.importorskip("ultralytics")
    from edgekit._ultralytics import ultralytics

    return ultralytics()


def _figures(trainer) -> dict:
    ns = {}
    exec(FIGURES, ns)
    return ns["figures"](trainer)


@pytest.fixture(scope="module")
def launched(ul, tmp_path_factory, coco8, weights):
    """strategy -> (Ultralytics' generated worker script, the single-process trainer's figures)."""
    from ultralytics.utils.dist import ddp_cleanup, generate_ddp_file

    from edgekit.train.run import prepare

    runs, jobs = {}, []
    for strategy in ("schedule:0:backbone,1:none", "lora:4"):
        job = prepare(weights, coco8, strategy, epochs=2, imgsz=IMGSZ, batch=BATCH, device="cpu",
                      out_dir=tmp_path_factory.mktemp("ddp") / "run", backbone_lr_mult=LR_MULT, **QUIET)
        file = generate_ddp_file(job.trainer)  # the state as the DDP parent writes it, before any training
        jobs.append((job, file))
        job.trainer._setup_train()  # then the same trainer, single process, up to the optimizer
        runs[strategy] = (Path(file).read_text(), _figures(job.trainer))
    yield runs
    for job, file in jobs:
        ddp_cleanup(job.trainer, file)
        job.ckpt_tmp.cleanup()


def _worker(tmp_path, generated: str, prefix: str = "") -> dict:
    """Run Ultralytics' worker script up to the optimizer (instead of trainer.train()); the figures it ends with."""
    rebuild = 'trainer = state["trainer"](cfg=cfg, overrides=state["args"], _callbacks=state["callbacks"])'
    assert rebuild in generated and generated.count("    trainer.train()\n") == 1
    script = FIGURES + prefix + generated.replace(
        "    trainer.train()\n", f"    trainer._setup_train()\n    print({MARK!r} + json.dumps(figures(trainer)))\n")
    path = tmp_path / "worker.py"
    path.write_text(script)
    r = subprocess.run([sys.executable, str(path)], env={**os.environ, **WORKER_ENV}, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [ln[len(MARK):] for ln in r.stdout.splitlines() if ln.startswith(MARK)]
    assert len(lines) == 1, r.stdout[-2000:]
    return json.loads(lines[0])


def _lrs(figs) -> dict:
    return {g: lr for g, lr, _ in figs["groups"]}


@pytest.mark.slow
def test_ddp_worker_rebuilds_schedule_plan(launched, tmp_path):
    """Frozen set per epoch, LR groups with the backbone multiplier and the re-warm-up: worker == single process."""
    generated, parent = launched["schedule:0:backbone,1:none"]
    worker = _worker(tmp_path, generated)
    assert worker == parent
    assert worker["strategy"] == "schedule:0:backbone,1:none"
    assert worker["frozen_0"] == list(range(10)) and worker["frozen_1"] == []  # YOLOv8n backbone = modules 0-9
    assert worker["trainable_0"] < worker["trainable_1"]
    lrs = _lrs(worker)
    assert set(lrs) == {"backbone", "neck", "head"} and len(worker["groups"]) == 9  # 3 groups x weight/bn/bias
    assert lrs["backbone"] == pytest.approx(LR_MULT * lrs["neck"]) and lrs["neck"] == lrs["head"]
    backbone_rewarm = [lr for g, lr in worker["rewarm"] if g == "backbone"]  # unfrozen at epoch 1: batch 1 of 2
    assert len(backbone_rewarm) == 3 and all(lr == pytest.approx(lrs["backbone"] / 2) for lr in backbone_rewarm)


@pytest.mark.slow
def test_ddp_worker_rebuilds_lora_plan(launched, tmp_path):
    """LoRA wrapping happens in the worker's get_model: same adapters, frozen backbone and groups as one process."""
    generated, parent = launched["lora:4"]
    worker = _worker(tmp_path, generated)
    assert worker == parent
    assert worker["strategy"] == "lora:4" and worker["lora"] > 10
    assert worker["frozen_0"] == worker["frozen_1"] == list(range(10))
    assert sum(n for _, _, n in worker["groups"]) > sum(n for _, _, n in launched["schedule:0:backbone,1:none"][1]
                                                        ["groups"])  # the adapters are in the optimizer too


@pytest.mark.slow
def test_ddp_worker_without_plan_differs(launched, tmp_path):
    """The check can fail: the worker as it was (plan left in the callbacks only) gets Ultralytics' plain groups."""
    generated, parent = launched["schedule:0:backbone,1:none"]
    worker = _worker(tmp_path, NO_PLAN + generated)
    assert worker["strategy"] is None and worker["groups"] != parent["groups"]
    assert {g for g, _, _ in worker["groups"]} == {None} and len(set(_lrs(worker).values())) == 1  # no multiplier
    assert worker["rewarm"] == [] != parent["rewarm"]


def test_ddp_worker_without_plan_in_callbacks_stops(ul, monkeypatch):
    """A worker whose callbacks carry no plan (Ultralytics changed how it rebuilds) stops instead of training vanilla."""
    from types import SimpleNamespace

    from edgekit.errors import EdgekitError
    from edgekit.train.ddp import adopt_plan

    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(EdgekitError) as e:
        adopt_plan(SimpleNamespace(callbacks={"on_train_start": [print]}, plan=None))
    assert str(e.value).startswith("DDP worker (LOCAL_RANK 1): the strategy plan did not arrive with the trainer's "
                                   "callbacks (Ultralytics 8.4")


def _one_worker_ddp(monkeypatch):
    """Make train() take Ultralytics' DDP route on CPU: one torch.distributed.run worker (its device is the CPU)."""
    import edgekit.train.ddp  # noqa: F401
    import edgekit.train.run as run
    import edgekit.train.yolo as yolo

    real = yolo.trainer_class

    def trainer_class():
        class OneWorkerDDP(real()):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                if "LOCAL_RANK" not in os.environ:  # the launching process
                    self.ddp, self.world_size = True, 1

        return OneWorkerDDP

    monkeypatch.setattr(yolo, "trainer_class", trainer_class)
    monkeypatch.setattr(run, "launches_ddp", lambda device: True)


@pytest.mark.slow
def test_ddp_route_end_to_end_metrics_come_back(ul, tmp_path, coco8, weights, monkeypatch):
    """A real DDP launch: rank 0 trains and records, the parent returns the same train.json as one device would."""
    from edgekit.train import train

    _one_worker_ddp(monkeypatch)
    out = tmp_path / "run"
    doc = train(weights, coco8, "schedule:0:backbone,1:none", epochs=2, imgsz=IMGSZ, batch=BATCH, device="cpu",
                out_dir=out, backbone_lr_mult=LR_MULT, **QUIET)
    assert doc == json.loads((out / "train.json").read_text())
    assert doc["status"] == "done" and doc["epochs"] == 2 and doc["best"] == "best.pt"
    assert [s["frozen_groups"] for s in doc["schedule"]] == [["backbone"], []]
    assert [r["frozen_groups"] for r in doc["epoch_records"]] == [["backbone"], []]
    assert doc["trainable_params"][0] < doc["trainable_params"][1] and len(doc["epoch_s"]) == 2
    rank0 = json.loads((out / "ddp" / "edgekit_ddp.json").read_text())
    assert rank0["finished"] and doc["map50_95"] == rank0["metrics"]["metrics/mAP50-95(B)"]  # best.pt's final val
    assert isinstance(doc["map50_95"], float) and 0 <= doc["map50_95"] <= doc["map50"] <= 1
    assert (out / "best.pt").exists() and (out / "last.pt").exists()
    assert (out / "data.yaml").exists()  # the launcher cleared out/ddp, not the data view beside it
    assert not (out / "ddp" / "weights").exists()


class _Launched:
    """A parent trainer whose DDP workers already exited (successfully, or with `fail`)."""

    ddp, metrics = True, None

    def __init__(self, save_dir: Path, fail: BaseException | None = None):
        self.save_dir, self.fail = save_dir, fail

    def train(self):
        if self.fail:
            raise self.fail


def _job(tmp_path, trainer):
    from edgekit.train.run import Job, _Record
    from edgekit.train.strategy import parse_strategy
    from edgekit.train.yolo import Plan

    plan = Plan(parse_strategy("full"), **QUIET)
    record = _Record(tmp_path, {"device": "0,1", "strategy": "full"}, plan, {}, 2, 2.0, 0.0)
    return Job(trainer, plan, record, None, QUIET["log"])


REC = {"epoch": 1, "train_s": 1.0, "loss": 2.0, "trainable_params": 10, "frozen_groups": [], "map50": 0.5,
       "map50_95": 0.3, "epoch_s": 2.0}


@pytest.mark.parametrize("results, message", [
    (None, "the DDP workers exited without results from rank 0"),
    ({"records": [], "applied": [], "metrics": None, "finished": False},
     "rank 0 of the DDP run finished no validated epoch"),
    ({"records": [{k: v for k, v in REC.items() if not k.startswith("map")}], "applied": [], "metrics": None,
      "finished": True}, "finished no validated epoch"),
])
def test_ddp_run_that_produced_nothing_raises_artifact_error(ul, tmp_path, results, message):
    from edgekit.errors import ArtifactError
    from edgekit.train.run import _run_trainer

    if results is not None:
        (tmp_path / "edgekit_ddp.json").write_text(json.dumps(results))
    with pytest.raises(ArtifactError) as e:
        _run_trainer(_job(tmp_path, _Launched(tmp_path)))
    assert str(e.value).startswith(f"{tmp_path / 'edgekit_ddp.json'}: ") and str(e.value).endswith(message)
    assert "\n" not in str(e.value)


def test_ddp_worker_failure_keeps_rank0_epochs(ul, tmp_path):
    """A worker that dies: one-line error, and train.json says interrupted with the epochs rank 0 finished."""
    from edgekit.errors import EdgekitError
    from edgekit.train.run import _run_trainer

    (tmp_path / "edgekit_ddp.json").write_text(json.dumps({"records": [REC], "applied": [], "metrics": None,
                                                           "finished": False}))
    fail = subprocess.CalledProcessError(1, ["python", "-m", "torch.distributed.run"])
    with pytest.raises(EdgekitError) as e:
        _run_trainer(_job(tmp_path, _Launched(tmp_path, fail)))
    assert str(e.value).startswith("multi-GPU training on device 0,1: a DDP worker exited with code 1")
    assert "\n" not in str(e.value)
    doc = json.loads((tmp_path / "train.json").read_text())
    assert doc["status"] == "interrupted" and doc["epochs"] == 1 and doc["map50_95"] == 0.3


@pytest.mark.parametrize("installed, message", [
    (None, "cloudpickle is not installed: pip install 'edgekit[train]' or pip install 'cloudpickle>=3.1.1'"),
    ("3.0.0", "cloudpickle 3.0.0 is too old: pip install 'edgekit[train]' or pip install 'cloudpickle>=3.1.1'"),
])
def test_ddp_without_cloudpickle_names_package_and_extra(ul, tmp_path, coco8, weights, monkeypatch, installed,
                                                         message):
    """The DDP route stops with one line before Ultralytics could pip-install cloudpickle or launch anything."""
    import importlib.metadata as md

    import ultralytics.engine.trainer as ul_trainer
    import ultralytics.utils.checks as checks

    from edgekit.errors import MissingDependency
    from edgekit.train import train

    def never(*args, **kwargs):
        raise AssertionError("reached Ultralytics' requirement check or the DDP launch")

    if installed is None:
        monkeypatch.setitem(sys.modules, "cloudpickle", None)
    else:
        real = md.version
        monkeypatch.setattr(md, "version", lambda name: installed if name == "cloudpickle" else real(name))
    monkeypatch.setattr(checks, "check_requirements", never)
    monkeypatch.setattr(ul_trainer, "generate_ddp_command", never)
    _one_worker_ddp(monkeypatch)
    with pytest.raises(MissingDependency) as e:
        train(weights, coco8, "full", epochs=1, imgsz=IMGSZ, batch=BATCH, device="cpu", out_dir=tmp_path / "r",
              **QUIET)
    assert str(e.value).startswith("multi-GPU training needs cloudpickle>=3.1.1") and str(e.value).endswith(message)
    assert "\n" not in str(e.value)


def test_bad_input_ddp_callback_that_cannot_reach_workers(ul, tmp_path, coco8, weights, monkeypatch):
    """A callback the workers cannot unpickle (here it holds a lock): one line naming it, before any launch."""
    import threading

    from edgekit.errors import EdgekitError
    from edgekit.train import train

    lock = threading.Lock()

    def locked(trainer):
        with lock:
            pass

    _one_worker_ddp(monkeypatch)
    with pytest.raises(EdgekitError) as e:
        train(weights, coco8, "full", epochs=1, imgsz=IMGSZ, batch=BATCH, device="cpu", out_dir=tmp_path / "r",
              callbacks={"on_train_start": locked}, **QUIET)
    assert str(e.value) == ("multi-GPU training: callback test_bad_input_ddp_callback_that_cannot_reach_workers."
                            "<locals>.locked (on_train_start) cannot be sent to the DDP workers: "
                            "cannot pickle '_thread.lock' object")


@pytest.mark.parametrize("device, name", [("0,1", "ddp"), ("cuda:0,1", "ddp"), ("0", "run"), ("cpu", "run")])
def test_ddp_ultralytics_folder_is_inside_the_run(tmp_path, device, name):
    """Ultralytics' DDP launcher deletes its save_dir first: on several GPUs that is out/ddp, never out itself."""
    from edgekit.train.run import _trainer_args

    out = tmp_path / "run"
    args = _trainer_args(out / "data.yaml", out, 1, IMGSZ, BATCH, device, 5, 0, True, 0, {})
    assert Path(args["project"]) / args["name"] == (out / "ddp" if name == "ddp" else out)
