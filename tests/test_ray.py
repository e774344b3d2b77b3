"""train-export --executor ray on a real two-node local Ray cluster (127.0.0.1 only): same rows as the local executor,
bench tasks on the device's node, a worker killed mid-training resumes from its last finished epoch.

The cluster is Ray's own multi-node-on-one-machine harness (ray.cluster_utils.Cluster: a head with 1 CPU and a second
raylet with no CPU and the custom resource `dev0`, standing for the target device); RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
makes every Ray process bind the loopback address. The module's fixture starts it and shuts it down.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from edgekit.cli.main import main  # noqa: E402
from edgekit.sweep.pipeline import Pipeline  # noqa: E402
from edgekit.sweep.executor import LocalExecutor, RayExecutor  # noqa: E402

TINY = dict(imgsz=[64, 96], batch=4, backends=["onnxruntime"], precisions=["fp32"], bench_iters=3, calib_size=16,
            bench_rounds=(1, 1))
DEVICE = "dev0"


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    env = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                      "object_store_memory": 100_000_000})
    c.add_node(num_cpus=0, resources={DEVICE: 1}, object_store_memory=100_000_000)
    c.wait_for_nodes()
    try:
        yield c
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture()
def data(tmp_path, coco8):
    dst = tmp_path / "coco8"
    shutil.copytree(coco8.parent, dst, ignore=shutil.ignore_patterns("*.cache"))
    return dst / "data.yaml"


def _device_node(address: str) -> str:
    ray.init(address=address, log_to_driver=False)
    try:
        return next(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get(DEVICE))
    finally:
        ray.shutdown()


def _figures(rows):
    return sorted((r["model"], r["imgsz"], r["strategy"], r["backend"], r["precision"], r["status"],
                   round(r["map50_95"], 4), round(r["map50"], 4)) for r in rows)


@pytest.mark.slow
def test_ray_sweep_gives_the_local_rows_with_bench_on_the_device_node(cluster, tmp_path, data, weights):
    import torch

    # a Ray task gets OMP_NUM_THREADS = its CPUs (1): train the local run on one thread too, so both are bitwise alike
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = Pipeline(out=tmp_path / "local", data=data, model=weights, strategies=["head", "full"], epochs=1,
                         log=lambda *_: None, executor=LocalExecutor(), **TINY).run()
    finally:
        torch.set_num_threads(threads)
    ex = RayExecutor(cluster.address, bench_resource=DEVICE)
    try:
        remote = Pipeline(out=(tmp_path / "ray").absolute(), data=data.absolute(), model=weights,
                          strategies=["head", "full"], epochs=1, log=lambda *_: None, executor=ex, **TINY).run()
    finally:
        ex.close()
    assert len(local["rows"]) == 4  # 2 sizes x 2 strategies x ONNX Runtime fp32
    assert _figures(remote["rows"]) == _figures(local["rows"])
    device = _device_node(cluster.address)
    assert {r["bench_node"] for r in remote["rows"]} == {device}
    assert all(r["bench_node"].startswith("local:") for r in local["rows"])
    assert remote["executor"]["executor"] == "ray" and remote["executor"]["nodes"] == 2


@pytest.mark.slow
def test_killed_worker_resumes_from_its_last_finished_epoch(cluster, tmp_path, data, weights):
    import psutil

    out = (tmp_path / "run").absolute()
    train_json = out / "full" / "train" / "train.json"
    killed: list[int] = []

    def killer():
        deadline = time.time() + 240
        while time.time() < deadline and not killed:
            try:
                recs = json.loads(train_json.read_text()).get("epoch_records") or []
            except (OSError, json.JSONDecodeError):
                recs = []
            if recs and (out / "full" / "train" / "last.pt").exists():
                for p in psutil.process_iter(["cmdline"]):
                    if any("edgekit-train" in c for c in (p.info["cmdline"] or [])):
                        p.send_signal(signal.SIGKILL)
                        killed.append(p.pid)
                return
            time.sleep(0.05)

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    ex = RayExecutor(cluster.address, bench_resource=DEVICE)
    try:
        doc = Pipeline(out=out, data=data.absolute(), model=weights, strategies=["full"], epochs=3,
                       log=lambda *_: None, executor=ex, **{**TINY, "imgsz": 64}).run()
    finally:
        ex.close()
        th.join(5)
    assert killed, "the training task was never seen running"
    assert doc["rows"] and all(r["status"] == "ok" and r["fps_e2e"] for r in doc["rows"]), doc["rows"]
    record = json.loads((out / "full" / "stages" / "train.json").read_text())
    assert record["status"] == "done" and record["result"]["epochs"] == 3
    assert record["result"]["resumed_from_epoch"] >= 1  # the retried task did not train the finished epochs again
    train = json.loads(train_json.read_text())
    assert [e["epoch"] for e in train["epoch_records"]] == [1, 2, 3]


@pytest.mark.slow
def test_failing_trial_is_reported_and_the_sweep_finishes(cluster, tmp_path, data, weights, capsys):
    """A trial that fails on every retry becomes an error row; the others are reported; exit non-zero."""
    bad = tmp_path / "broken.yaml"
    bad.write_text("nc: 80\nbackbone: [[-1, 1, NoSuchLayer, [16]]]\nhead: []\n")
    out = tmp_path / "run"
    code = main(["train-export", "--executor", "ray", "--ray-address", cluster.address, "--bench-resource", DEVICE,
                 "--data", str(data), "--models", f"{weights},{bad}", "--strategies", "full", "--epochs", "1",
                 "--imgsz", "64", "--batch", "4", "--backends", "onnxruntime", "--precisions", "fp32",
                 "--bench-iters", "3", "-o", str(out)])
    err = capsys.readouterr().err
    assert code != 0
    doc = json.loads((out / "report.json").read_text())
    by_model = {r["model"]: r for r in doc["rows"]}
    assert by_model[weights.name]["status"] == "ok" and by_model[weights.name]["fps_e2e"]
    assert by_model["broken.yaml"]["status"] == "error" and "NoSuchLayer" in by_model["broken.yaml"]["error"]
    assert err.strip().splitlines()[-1].startswith("edgekit train-export: error: ")


@pytest.mark.slow
def test_halving_through_a_uri_storage(cluster, tmp_path, data, weights, capsys):
    """--search halving promotes within the group on Ray; --storage file:// holds records and artifacts, -o the report."""
    from edgekit.sweep.storage import Storage

    store = f"file://{tmp_path / 'store'}"
    out = tmp_path / "report"
    try:
        code = main(["train-export", "--executor", "ray", "--ray-address", cluster.address, "--bench-resource", DEVICE,
                     "--storage", store, "--search", "halving", "--data", str(data), "--model", str(weights),
                     "--strategies", "head,full", "--epochs", "3", "--imgsz", "64", "--batch", "4", "--backends",
                     "onnxruntime", "--precisions", "fp32", "--bench-iters", "3", "-o", str(out)])
        assert code == 0, capsys.readouterr().err
    finally:
        shutil.rmtree(Storage(store).root, ignore_errors=True)  # this node's mirror
    doc = json.loads((out / "report.json").read_text())
    assert [(p["strategy"], p["rung"]) for p in doc["pruned"]] in ([("head", 1)], [("full", 1)])
    kept = {r["strategy"] for r in doc["rows"]}
    assert len(kept) == 1 and kept != {doc["pruned"][0]["strategy"]}
    assert all(r["status"] == "ok" and r["epochs"] == 3 for r in doc["rows"])
    stored = tmp_path / "store"
    for s in ("head", "full"):
        assert (stored / s / "stages" / "train@1.json").exists()
    assert (stored / next(iter(kept)) / "stages" / "rows.json").exists()
    assert (out / "report.md").exists() and not (out / "head").exists()


@pytest.mark.parametrize("argv, message", [
    (["--storage", "/tmp/x"], "--storage: needs --executor ray (the local executor writes to -o)"),
    (["--bench-resource", "jetson0"], "--ray-address/--bench-resource: these need --executor ray"),
])
def test_bad_input_executor_options(argv, message, tmp_path, coco8, capsys):
    assert main(["train-export", "--data", str(coco8), "-o", str(tmp_path / "o"), *argv]) == 2
    assert capsys.readouterr().err.strip() == f"edgekit train-export: error: {message}"


def test_bad_input_bench_resource_nobody_offers(cluster, tmp_path, coco8, capsys):
    assert main(["train-export", "--executor", "ray", "--ray-address", cluster.address, "--bench-resource",
                 "jetson9", "--data", str(coco8), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edgekit train-export: error: --bench-resource: no node of the Ray cluster at ")
    assert "offers the resource 'jetson9'" in err
    assert not ray.is_initialized()


@pytest.mark.parametrize("gpu, resource, kind, expected", [
    (False, "jetson0", "bench", {"num_cpus": 0, "resources": {"jetson0": 1}, "max_retries": 3}),
    (True, "jetson0", "bench", {"num_cpus": 0, "resources": {"jetson0": 1}, "max_retries": 3, "num_gpus": 1}),
    (False, None, "train", {"num_cpus": 2, "max_retries": 3}),
    (True, None, "train", {"num_cpus": 2, "max_retries": 3, "num_gpus": 1}),
    (True, None, "trial", {"num_cpus": 2, "max_retries": 3, "num_gpus": 1}),
])
def test_task_options_by_kind_and_target(gpu, resource, kind, expected):
    ex = RayExecutor.__new__(RayExecutor)  # the options alone, without a cluster
    ex.gpu, ex.bench_resource, ex.task_cpus, ex.max_retries = gpu, resource, 2, 3
    assert ex.options(kind) == expected


def test_bench_without_a_resource_stays_on_the_driver_node():
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ex = RayExecutor.__new__(RayExecutor)
    ex.gpu, ex.bench_resource, ex.task_cpus, ex.max_retries, ex.driver_node = False, None, 1, 3, "ab" * 28
    opts = ex.options("bench")
    assert opts["num_cpus"] == 0 and isinstance(opts["scheduling_strategy"], NodeAffinitySchedulingStrategy)
    assert opts["scheduling_strategy"].node_id == "ab" * 28 and opts["scheduling_strategy"].soft is False
