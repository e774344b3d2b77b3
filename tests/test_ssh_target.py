"""Issue S: `--target ssh://...` measures on a device over real SSH, where a runtime-only edgekit runs.

The device is this machine's Debian OpenSSH server, started by the test on 127.0.0.1 (a free port, its own host key
and sshd_config, key authentication only), whose login (ForceCommand) runs a second venv that holds only the wheel of
edgekit[openvino,onnxruntime,eval]: no torch, Ultralytics or Ray. Skipped with the reason where sshd, root or venv
creation is unavailable. Every wait is bounded; nothing leaves loopback.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
DEVICE_EXTRAS = "openvino,onnxruntime,eval"  # what README's device install names
SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)


def _edgekit(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "edgekit", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgekit-test", "-f", str(path)],
                   check=True, capture_output=True, timeout=30)
    return path.with_suffix(".pub").read_text().strip()


class Sshd:
    """One OpenSSH server on 127.0.0.1, in the foreground (-D -e), whose login runs the device venv."""

    def __init__(self, root: Path, venv: Path):
        self.root, self.port, self.proc = root, _free_port(), None
        root.mkdir(parents=True, exist_ok=True)
        self.host_pub = _keygen(root / "host_ed25519")
        user_pub = _keygen(root / "id_ed25519")
        (root / "authorized_keys").write_text(user_pub + "\n")
        self.known_hosts = root / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {' '.join(self.host_pub.split()[:2])}\n")
        home = root / "device-home"
        home.mkdir(exist_ok=True)
        login = root / "login.sh"  # the device's environment: its venv first on PATH, its own home and cache
        login.write_text(f"#!/bin/sh\nunset PYTHONPATH\nPATH={venv}/bin:/usr/bin:/bin\nHOME={home}\n"
                         f"XDG_CACHE_HOME={home}/.cache\nexport PATH HOME XDG_CACHE_HOME\ncd \"$HOME\"\n"
                         'exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"\n')
        login.chmod(0o755)
        (root / "sshd_config").write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {root / 'host_ed25519'}", "PidFile none",
            f"AuthorizedKeysFile {root / 'authorized_keys'}", "PubkeyAuthentication yes",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password",
            "UsePAM no", "StrictModes no", f"ForceCommand {login}", "X11Forwarding no", "AllowTcpForwarding no",
            "PrintMotd no", ""]))
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGEKIT_SSH_IDENTITY": str(root / "id_ed25519"),
                    "EDGEKIT_SSH_KNOWN_HOSTS": str(self.known_hosts), "EDGEKIT_SSH_CONFIG": "/dev/null"}
        self.url = f"ssh://root@127.0.0.1:{self.port}/cpu"

    def start(self) -> None:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation folder
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.root / "sshd_config")],
                                     stdout=subprocess.DEVNULL, stderr=open(self.root / "sshd.log", "ab"))
        for _ in range(100):  # at most 10 s
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.root / 'sshd.log').read_text()[-500:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError("sshd did not listen within 10 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture(scope="session")
def device_venv(tmp_path_factory) -> Path:
    """A venv (no system site-packages) holding only the edgekit wheel with DEVICE_EXTRAS, built as .ci/run does."""
    if os.geteuid() != 0 or SSHD is None:
        pytest.skip("needs root and Debian's openssh-server (apt-get install openssh-server) for a real sshd")
    if os.environ.get("EDGEKIT_TEST_DEVICE_VENV"):  # a venv made earlier by this fixture (CI may pass one)
        return Path(os.environ["EDGEKIT_TEST_DEVICE_VENV"])
    tmp = tmp_path_factory.mktemp("device")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                        str(tmp / "wheel"), str(ROOT)], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        pytest.skip(f"could not build the wheel: {r.stderr.strip()[-300:]}")
    wheel = next((tmp / "wheel").glob("edgekit-*.whl"))
    venv = tmp / "venv"
    r = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        pytest.skip(f"python -m venv failed: {r.stderr.strip()[-300:]}")
    r = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"{wheel}[{DEVICE_EXTRAS}]"],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": ""})
    if r.returncode != 0:
        pytest.skip(f"could not install the wheel into the device venv: {r.stderr.strip()[-300:]}")
    return venv


@pytest.fixture(scope="module")
def sshd(device_venv, tmp_path_factory):
    server = Sshd(tmp_path_factory.mktemp("sshd"), device_venv)
    server.start()
    yield server
    server.stop()


COCO8 = ROOT / "tests" / "assets" / "coco8" / "data.yaml"
TINY = ["--data", str(COCO8), "--strategies", "head", "--epochs", "1", "--imgsz", "160", "--batch", "4",
        "--backends", "openvino", "--precisions", "fp32", "--bench-iters", "5"]


def _one_line_error(r, code=2) -> str:
    assert r.returncode == code, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


# --- no server needed ---------------------------------------------------------------------------------------------

def test_target_urls_parse():
    """S: ssh://user@host[:port][/device] is one object; the device part defaults to cpu."""
    from edgekit.target import parse_target

    t = parse_target("ssh://nvidia@orin/cuda:0")
    assert (t.user, t.host, t.port, t.device) == ("nvidia", "orin", None, "cuda:0")
    t = parse_target("ssh://pi@10.0.0.7:2222")
    assert (t.user, t.host, t.port, t.device, t.url) == ("pi", "10.0.0.7", 2222, "cpu", "ssh://pi@10.0.0.7:2222/cpu")


@pytest.mark.parametrize("bad", ["ssh://", "http://pi@host/cpu", "ssh://pi@host:99999/cpu", "ssh://h/cpu/x"])
def test_bad_target_is_one_line(bad, tmp_path):
    """S: a malformed --target is one line naming it, exit 2, before anything is sent."""
    (tmp_path / "m.onnx").write_bytes(b"x")
    r = _edgekit("bench", tmp_path / "m.onnx", "--target", bad)
    line = _one_line_error(r)
    assert f"--target {bad}" in line


@pytest.mark.parametrize("cmd", ["bench", "eval"])
def test_device_and_target_disagreeing_is_one_line(cmd, tmp_path):
    """S: --device that contradicts the target's device part is refused (never one silently ignored)."""
    (tmp_path / "m.onnx").write_bytes(b"x")
    r = _edgekit(cmd, tmp_path / "m.onnx", "--data", COCO8, "--device", "cuda:0", "--target", "ssh://pi@h/cpu")
    line = _one_line_error(r)
    assert line.endswith("--device cuda:0 and --target ssh://pi@h/cpu: the device is the part after the host "
                         "(e.g. ssh://pi@h/cuda:0)")


def test_version_rule():
    """S: a device whose edgekit version differs from the host's is refused (figures would not be comparable)."""
    from edgekit import __version__
    from edgekit.target import parse_target
    from edgekit.target.ssh import TargetError

    t = parse_target("ssh://pi@10.0.0.7/cpu")
    t.check_version(__version__)
    with pytest.raises(TargetError, match=r"device runs edgekit 0\.0\.0-other, this host"):
        t.check_version("0.0.0-other")


def test_unreachable_device_is_one_line(tmp_path, onnx160):
    """S: nothing listens on the port: one line naming the target, exit 2."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGEKIT_SSH_CONFIG": "/dev/null",
           "EDGEKIT_SSH_KNOWN_HOSTS": str(tmp_path / "known_hosts")}
    r = _edgekit("bench", onnx160, "--target", f"ssh://root@127.0.0.1:{port}/cpu", env=env, timeout=120)
    line = _one_line_error(r)
    assert f"ssh://root@127.0.0.1:{port}/cpu: cannot connect" in line


# --- against a real sshd ------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_device_venv_is_runtime_only(sshd, device_venv):
    """S: the device side is a runtime-only install: no torch, Ultralytics or Ray; doctor --target says so."""
    py = device_venv / "bin" / "python"
    r = subprocess.run([str(py), "-c", "import importlib.util as u, edgekit; print(edgekit.__file__); "
                        "print([m for m in ('torch', 'ultralytics', 'ray') if u.find_spec(m)])"],
                       capture_output=True, text=True, cwd="/", env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert r.returncode == 0, r.stderr
    assert str(device_venv) in r.stdout and r.stdout.strip().endswith("[]"), r.stdout
    r = _edgekit("-q", "doctor", "--target", sshd.url, "--json", "-", env=sshd.env, timeout=120)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["target"] == sshd.url and rep["backends"]["openvino"]["installed"]
    assert not rep["backends"]["torch"]["installed"] and "ultralytics" not in rep["packages"]
    assert rep["cpu"]["arch"] and "fp32" in rep["backends"]["openvino"]["precisions"]["CPU"]
    assert rep["edgekit"] == __import__("edgekit").__version__


@pytest.mark.slow
def test_bench_and_eval_on_the_device(sshd, onnx160, coco8, tmp_path):
    """S: bench and eval run by the device's edgekit; the environment record is the device's; mAP equals the local
    eval within 0.0005; the second run sends nothing again (content-keyed cache on the device)."""
    out = tmp_path / "bench.json"
    r = _edgekit("bench", onnx160, "--target", sshd.url, "--iters", "10", "--warmup", "2",
                 "--warmup-ms", "0", "--sustain", "2s", "--json", out, env=sshd.env)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["target"] == sshd.url and res["artifact"] == str(onnx160)
    assert res["latency_ms"]["e2e"]["p50"] > 0
    assert len(res["sustained"]["windows"]) >= 2  # sustained mode on the device too
    from edgekit.bench.schema import check

    assert check(res) == []  # the documented bench JSON, as a local run writes it
    env = res["environment"]
    assert "torch" not in env["versions"], env["versions"]  # the host has torch; the device's record has not
    assert env["edgekit"]["git_sha"] is None  # the device runs the wheel, not this checkout
    cache = sshd.root / "device-home" / ".cache" / "edgekit-remote"
    stored = sorted(p.name for p in cache.iterdir() if not p.name.startswith("."))
    assert len(stored) == 1 and len(stored[0]) == 64  # one content key, no temp folder left
    assert {p.name for p in (cache / stored[0]).iterdir()} == {"model.onnx", "model.json"}

    local = tmp_path / "local.json"
    r = _edgekit("eval", onnx160, "--data", coco8, "--json", local, env=sshd.env)
    assert r.returncode == 0, r.stderr
    remote = tmp_path / "remote.json"
    r = _edgekit("eval", onnx160, "--data", coco8, "--target", sshd.url, "--json", remote, env=sshd.env)
    assert r.returncode == 0, r.stderr
    a, b = json.loads(local.read_text()), json.loads(remote.read_text())
    assert b["target"] == sshd.url and b["images"] == a["images"] and b["boxes"] == a["boxes"]
    assert abs(a["map50_95"] - b["map50_95"]) <= 0.0005 and abs(a["map50"] - b["map50"]) <= 0.0005
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 2  # + the val split, once


@pytest.mark.slow
def test_changed_host_key_is_refused(sshd, onnx160, tmp_path):
    """S: a host key that differs from known_hosts is refused with one line naming the host and the file."""
    other = _keygen(tmp_path / "other")
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[127.0.0.1]:{sshd.port} {' '.join(other.split()[:2])}\n")
    before = kh.read_bytes()
    r = _edgekit("bench", onnx160, "--target", sshd.url, env={**sshd.env, "EDGEKIT_SSH_KNOWN_HOSTS": str(kh)})
    line = _one_line_error(r)
    assert f"[127.0.0.1]:{sshd.port} has CHANGED" in line and str(kh) in line and "refused" in line
    assert kh.read_bytes() == before  # never accepted, never rewritten


@pytest.mark.slow
def test_unknown_host_is_refused(sshd, onnx160, tmp_path):
    """S: a host that is not in known_hosts is refused (never auto-accepted), one line naming host and file."""
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    r = _edgekit("eval", onnx160, "--data", ROOT / "tests/assets/coco8/data.yaml", "--target", sshd.url,
                 env={**sshd.env, "EDGEKIT_SSH_KNOWN_HOSTS": str(kh)})
    line = _one_line_error(r)
    assert f"[127.0.0.1]:{sshd.port} is not in {kh}: refused" in line
    assert kh.read_text() == ""


def test_train_export_unreachable_device_fails_before_training(tmp_path):
    """S: an unreachable device is a one-line error before any training; nothing is written in -o."""
    pytest.importorskip("ultralytics")
    port = _free_port()
    url = f"ssh://root@127.0.0.1:{port}/cpu"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGEKIT_SSH_CONFIG": "/dev/null",
           "EDGEKIT_SSH_KNOWN_HOSTS": str(tmp_path / "known_hosts")}
    r = _edgekit("train-export", *TINY, "--target", url, "-o", tmp_path / "run", env=env)
    line = _one_line_error(r)
    assert f"{url}: cannot connect" in line
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").rglob("best.pt"))


def _kill_when_benching(sshd, venv: Path, limit_s: float = 900) -> bool:
    """Wait (bounded) until the device runs `edgekit bench`, then kill sshd and its sessions: a connection lost
    mid-bench. True if it happened."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        for p in psutil.process_iter(["cmdline"]):
            cmd = p.info["cmdline"] or []
            if any(str(venv) in c for c in cmd[:2]) and "bench" in cmd:
                server = psutil.Process(sshd.proc.pid)
                for child in server.children(recursive=True):  # the sessions this test's sshd forked
                    child.kill()
                sshd.stop()
                return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_train_export_on_the_device_survives_a_lost_connection(sshd, device_venv, tmp_path):
    """S: train-export --target ssh://: trained here, each row evaluated and benchmarked on the device; the server
    killed mid-bench gives error rows with the reason while the sweep finishes; --resume re-measures only what is
    missing (no retraining) and completes."""
    import threading

    pytest.importorskip("ultralytics")
    out = tmp_path / "run"
    killed = []
    watcher = threading.Thread(target=lambda: killed.append(_kill_when_benching(sshd, device_venv)), daemon=True)
    watcher.start()
    r = _edgekit("train-export", *TINY, "--target", sshd.url, "-o", out, env=sshd.env, timeout=1200)
    watcher.join(timeout=60)
    assert killed == [True], "the device never ran a bench"
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads((out / "report.json").read_text())["rows"]
    assert rows and all(x["status"] == "error" for x in rows), rows
    assert all(f"bench on {sshd.url}: " in x["error"] for x in rows)
    assert all(x["map50_95"] is not None for x in rows)  # evaluated on the device before the loss
    best = next(out.rglob("best.pt"))
    trained = best.stat().st_mtime_ns

    sshd.start()  # the same port and host key
    r = _edgekit("train-export", *TINY, "--target", sshd.url, "-o", out, "--resume", "-v", env=sshd.env,
                 timeout=1200)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads((out / "report.json").read_text())["rows"]
    assert rows and all(x["status"] == "ok" for x in rows), rows
    assert all(x["bench_node"] == sshd.url and x["fps_e2e"] > 0 for x in rows)
    assert best.stat().st_mtime_ns == trained  # not trained again
    # the device's evaluations were kept: only the speed was missing
    assert re.search(r"\[resume\] .*openvino-fp32 eval: done, skipped", r.stderr), r.stderr[-3000:]


@pytest.mark.slow
def test_readme_device_section_runs_as_written(sshd, onnx160, tmp_path):
    """S: README "Measure on your Raspberry Pi or Jetson": the device's install is what the test's device holds,
    and the host's command runs as written (only the model file and the device's address substituted)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### Measure on your Raspberry Pi or Jetson", 1)[1].split("\n## ", 1)[0]
    install, host = [b.strip() for b in re.findall(r"```bash\n(.*?)```", section, re.S)]
    assert shlex.split(install) == ["pip", "install", f"edgekit[{DEVICE_EXTRAS}]"]
    argv = shlex.split(host)
    assert argv[:2] == ["edgekit", "bench"] and argv[3] == "--target" and argv[4].startswith("ssh://")
    argv[2], argv[4] = str(onnx160), sshd.url
    r = _edgekit(*argv[1:], "--json", tmp_path / "r.json", env=sshd.env)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "r.json").read_text())["target"] == sshd.url


@pytest.mark.slow
def test_eval_skip_bad_on_the_device_reports_what_was_skipped(sshd, onnx160, copy_dataset, tmp_path):
    """S: with --skip-bad, a sample this host cannot read is not sent and is still reported as skipped; the device's
    mAP equals the local --skip-bad eval; the user's dataset is unchanged."""
    import hashlib

    data = copy_dataset(COCO8)
    bad = sorted((data.parent / "labels" / "val").glob("*.txt"))[0]
    bad.write_text("0 0.5 0.5 0.2\n")  # four fields: a malformed line
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in data.parent.rglob("*") if p.is_file()}
    outs = []
    for extra in ([], ["--target", sshd.url]):
        out = tmp_path / f"r{len(outs)}.json"
        r = _edgekit("eval", onnx160, "--data", data, "--skip-bad", *extra, "--json", out, env=sshd.env)
        assert r.returncode == 0, r.stderr
        outs.append(json.loads(out.read_text()))
    local, remote = outs
    assert remote["skipped"] and len(remote["skipped"]) == len(local["skipped"]) and bad.name in remote["skipped"][0]
    assert remote["images"] == local["images"] and abs(remote["map50_95"] - local["map50_95"]) <= 0.0005
    assert before == {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in data.parent.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_device_without_edgekit_is_one_line(device_venv, onnx160, tmp_path):
    """S: a device whose PATH has no edgekit is one line naming the target and the install command, exit 2."""
    server = Sshd(tmp_path / "sshd", tmp_path / "no-venv")
    server.start()
    try:
        r = _edgekit("bench", onnx160, "--target", server.url, env=server.env, timeout=120)
    finally:
        server.stop()
    line = _one_line_error(r)
    assert line.endswith(f"{server.url}: no `edgekit` on the device's PATH: install it there, e.g. "
                         f"pip install \"edgekit[{DEVICE_EXTRAS}]\"")


@pytest.mark.slow
def test_train_export_on_the_device_sustained_with_host_accuracy(sshd, device_venv, tmp_path):
    """S: train-export --target ssh:// --sustain: the sustained run is the device's (`bench --sustain` there), its
    rows ranked by it; an INT8 row, whose accuracy gate the host measured, shows the host's mAP50-95 and the device's
    minus the host's (the same OpenVINO on the same CPU here: within 0.0005)."""
    pytest.importorskip("ultralytics")
    pytest.importorskip("nncf")
    out = tmp_path / "run"
    argv = [*TINY[:TINY.index("--precisions")], "--precisions", "int8", "--calib-size", "8", "--max-map-drop", "100",
            "--max-class-drop", "100", "--bench-iters", "5", "--sustain", "2s"]
    r = _edgekit("train-export", *argv, "--target", sshd.url, "-o", out, env=sshd.env, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads((out / "report.json").read_text())
    dev = [x for x in doc["rows"] if x["backend"] == "openvino"]
    assert dev and all(x["status"] == "ok" and x["bench_node"] == sshd.url for x in doc["rows"])
    assert all(x["sustained_p50_ms"] > 0 and isinstance(x["throttled"], bool) for x in doc["rows"])
    assert doc["recommendation"]["ranked_by"] == "sustained_p50_ms" and "swaps" in doc["sustained"]
    (int8,) = dev
    assert int8["map50_95_host"] is not None
    assert int8["map50_95_device_minus_host"] == round(int8["map50_95"] - int8["map50_95_host"], 5)
    assert abs(int8["map50_95_device_minus_host"]) <= 0.0005
    ref = next(x for x in doc["rows"] if x["backend"] == "onnxruntime")
    assert "map50_95_host" not in ref  # FP32 ONNX: the host measured nothing of its own
