"""Issue 19 (R2), command-line items: disk full, broken pipe, -q, nothing written into the home folder, help texts and
list options. Each test names the item it covers."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **extra}


def _edgekit(*args, cwd=None, env=None, limit_kb: int | None = None, stdout=subprocess.PIPE):
    """The CLI in a fresh interpreter; with limit_kb, under a real `ulimit -f` (SIGXFSZ/EFBIG past that size)."""
    cmd = [sys.executable, "-m", "edgekit", *map(str, args)]
    if limit_kb is not None:
        cmd = ["bash", "-c", f'ulimit -f {limit_kb}; exec "$@"', "bash", *cmd]
    return subprocess.run(cmd, stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=cwd or ROOT,
                          env=env or _env(), timeout=600)


def _tree(root: Path) -> dict[str, str]:
    """Every file under root (hidden ones included) -> its sha256."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# item 7: disk full (ulimit -f) -------------------------------------------------------------------------------------

@pytest.fixture()
def onnx_model(onnx160, tmp_path) -> Path:
    """A private copy of the 160 px export (12 MB model.onnx + model.json)."""
    d = tmp_path / "model"
    d.mkdir()
    for f in (onnx160, onnx160.with_suffix(".json")):
        shutil.copy2(f, d / f.name)
    return d / onnx160.name


def test_deploy_over_file_size_limit_is_one_line_and_keeps_the_old_repository(onnx_model, tmp_path):
    """Item 7: a write over `ulimit -f` (EFBIG) used to end in `OSError: [Errno 27] File too large`. Now: one line
    naming what was being written, exit 2, no temp files left, the previous artifact byte for byte the same."""
    repo = tmp_path / "work" / "triton_repo"
    r = _edgekit("deploy", onnx_model, "--triton", repo, "--name", "det")
    assert r.returncode == 0, r.stderr
    before = _tree(tmp_path)
    r = _edgekit("deploy", onnx_model, "--triton", repo, "--name", "det", limit_kb=1024)  # the model is 12 MB
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith(f"edgekit deploy: error: {repo}"), lines[0]
    assert "file too large" in lines[0]
    assert _tree(tmp_path) == before  # old repository intact, nothing new (no .triton_repo.* temp folder)


@pytest.mark.slow
def test_export_over_file_size_limit_names_the_folder_being_written(weights, tmp_path):
    """Item 7 with `edgekit export`: Ultralytics writes its ONNX in edgekit's private temp folder and fails there
    (EFBIG): one edgekit error line naming that folder, exit 2, the previous export unchanged, the temp folder gone."""
    pytest.importorskip("ultralytics")
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"previous artifact")
    (out / "model.json").write_text("{}")
    before = _tree(tmp_path)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    r = _edgekit("export", weights, "--imgsz", "160", "--no-parity", "-o", out, limit_kb=8000,
                 env=_env(TMPDIR=str(tmpdir)))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("edgekit export: error:")]
    assert len(errors) == 1 and r.stderr.strip().splitlines()[-1] == errors[0], r.stderr
    assert f"{tmpdir}/edgekit-export-" in errors[0] and "file too large" in errors[0], errors[0]
    assert list(tmpdir.glob("edgekit-export-*")) == []  # the private temp folder was removed
    assert _tree(out) == {k[len("out/"):]: v for k, v in before.items()}


_ATOMIC = """
import signal, sys
from pathlib import Path
from edgekit.errors import EdgekitError
from edgekit.io import atomic_dir, atomic_path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
target = Path(sys.argv[1])
try:
    if sys.argv[2] == "file":
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"x" * 400_000)
    else:  # a library that reports the failed write as its own exception type (OpenVINO, torch)
        with atomic_dir(target) as tmp:
            try:
                (tmp / "model.bin").write_bytes(b"x" * 400_000)
            except OSError:
                raise RuntimeError("Exception from src/core/src/pass/serialize.cpp: write failed") from None
except EdgekitError as e:
    print(e)
    sys.exit(2)
"""


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_atomic_writes_over_file_size_limit_name_the_target_and_clean_up(tmp_path, kind):
    """Item 7 at its cause: atomic_path / atomic_dir turn EFBIG (as an OSError, or a library's own exception with a
    file at the size limit) into an EdgekitError naming the target; the temp file/folder is removed."""
    target = tmp_path / ("report.json" if kind == "file" else "model_openvino")
    if kind == "file":
        target.write_text("old")
    else:
        target.mkdir()
        (target / "model.bin").write_text("old")
    before = _tree(tmp_path)
    r = subprocess.run(["bash", "-c", 'ulimit -f 100; exec "$@"', "bash", sys.executable, "-c", _ATOMIC,
                        str(target), kind], capture_output=True, text=True, env=_env())
    assert r.returncode == 2, r.stderr
    assert r.stdout.strip().startswith(f"{target}: cannot write: file too large"), r.stdout
    assert _tree(tmp_path) == before


def test_other_errors_raised_inside_an_atomic_write_stay_as_they_are(tmp_path):
    """A deliberate EdgekitError, or a bug, inside the block is not re-labelled as a space problem."""
    from edgekit.errors import AccuracyGateError
    from edgekit.io import atomic_path

    from edgekit.io import atomic_dir

    with pytest.raises(AccuracyGateError, match="gate"):
        with atomic_path(tmp_path / "x.json") as tmp:
            tmp.write_text("partial")
            raise AccuracyGateError("gate failed")
    with pytest.raises(RuntimeError, match="a bug"):  # any other failure, with room on the disk, is not one either
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "f").write_text("partial")
            raise RuntimeError("a bug")
    assert list(tmp_path.iterdir()) == []


# `--json - | head`: BrokenPipeError ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_json_to_a_closed_pipe_exits_quietly():
    """`edgekit ... --json - | head` ended in a BrokenPipeError traceback. The reader is gone before edgekit writes:
    no traceback, nothing on stderr, exit 141 (128 + SIGPIPE, as a shell reports `yes | head`)."""
    for quiet in ([], ["-q"]):
        r, w = os.pipe()
        os.close(r)  # the reader has already gone: every write to stdout fails with EPIPE
        try:
            p = _edgekit("doctor", *quiet, "--json", "-", stdout=w)
        finally:
            os.close(w)
        assert p.returncode == 141, p.stderr
        assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr and "Exception" not in p.stderr, p.stderr
        if quiet:
            assert p.stderr == ""
        else:
            assert "backends:" in p.stderr  # the readable report, on stderr with --json -


# -q: errors only ------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_quiet_prints_nothing_but_the_json_asked_for():
    """`-q still prints summaries`: -q shows errors only; the JSON asked for with `--json -` is still printed."""
    r = _edgekit("doctor", "-q")
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", (r.stdout, r.stderr)
    r = _edgekit("-q", "doctor", "--json", "-")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert json.loads(r.stdout)["edgekit"]
    r = _edgekit("doctor")
    assert "backends:" in r.stdout  # without -q the summary is there


def test_quiet_still_shows_errors(tmp_path):
    r = _edgekit("eval", tmp_path / "missing.onnx", "--data", ROOT / "tests" / "assets" / "coco8" / "data.yaml", "-q")
    assert r.returncode != 0
    assert r.stderr.strip().startswith("edgekit eval: error:") and "missing.onnx" in r.stderr, r.stderr


# nothing written into the home folder ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_commands_write_nothing_into_home(onnx160, tmp_path):
    """matplotlib (~/.config/matplotlib, ~/.cache/matplotlib font cache) and ONNX Runtime
    (~/.cache/Microsoft/DeveloperTools/.onnxruntime/deviceid, onnxruntime.db, written at import) wrote into the
    user's home. With HOME an empty folder: eval (ONNX Runtime), bench + bench --compare --png (matplotlib) leave it
    empty; an XDG_CACHE_HOME the user set is not written either, and the commands still work."""
    home, xdg, work = tmp_path / "home", tmp_path / "xdg", tmp_path / "work"
    for d in (home, xdg, work):
        d.mkdir()
    env = _env(HOME=str(home))
    env.pop("MPLCONFIGDIR", None)
    env.pop("XDG_CACHE_HOME", None)
    env.pop("XDG_CONFIG_HOME", None)
    coco8 = ROOT / "tests" / "assets" / "coco8" / "data.yaml"
    r = _edgekit("eval", onnx160, "--data", coco8, "--limit", "2", cwd=work, env=env)
    assert r.returncode == 0, r.stderr
    r = _edgekit("bench", onnx160, "--iters", "3", "--time", "0.1", "--warmup", "1", "--warmup-ms", "0",
                 "--json", "b.json", cwd=work, env={**env, "XDG_CACHE_HOME": str(xdg)})
    assert r.returncode == 0, r.stderr
    r = _edgekit("bench", "--compare", "b.json", "b.json", "--png", "c.png", cwd=work, env=env)
    assert r.returncode == 0, r.stderr
    assert (work / "c.png").stat().st_size > 0
    assert list(home.rglob("*")) == [] and list(xdg.rglob("*")) == []


@pytest.mark.slow
def test_train_and_export_write_nothing_into_home(weights, tmp_path):
    """The same for the commands that import them indirectly: Ultralytics imports matplotlib while training and
    ONNX Runtime while exporting (before: ~/.config/matplotlib, ~/.cache/matplotlib, ~/.cache/Microsoft/...)."""
    pytest.importorskip("ultralytics")
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = _env(HOME=str(home))
    for var in ("MPLCONFIGDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "YOLO_CONFIG_DIR"):
        env.pop(var, None)
    coco8 = ROOT / "tests" / "assets" / "coco8" / "data.yaml"
    r = _edgekit("train", weights, "--data", coco8, "--strategy", "head", "--epochs", "1", "--imgsz", "160",
                 "--batch", "4", "-o", "tr", cwd=work, env=env)
    assert r.returncode == 0, r.stderr
    r = _edgekit("export", weights, "--imgsz", "160", "--no-parity", "-o", "ex", cwd=work, env=env)
    assert r.returncode == 0, r.stderr
    assert (work / "tr" / "best.pt").exists() and (work / "ex" / "model.onnx").exists()
    assert list(home.rglob("*")) == []


def test_a_users_mplconfigdir_is_respected_and_the_environment_restored(tmp_path):
    """An MPLCONFIGDIR the user set is used as is; XDG_CACHE_HOME is back to the user's value after the import."""
    mpl, xdg = tmp_path / "mpl", tmp_path / "xdg"
    code = ("import os\nfrom edgekit._imports import require\nm = require('matplotlib')\nrequire('onnxruntime')\n"
            "print(m.get_configdir()); print(os.environ.get('MPLCONFIGDIR')); print(os.environ['XDG_CACHE_HOME'])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=_env(HOME=str(tmp_path / "home"), MPLCONFIGDIR=str(mpl), XDG_CACHE_HOME=str(xdg)))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(mpl), str(mpl), str(xdg)]
    assert not (tmp_path / "home").exists() and not xdg.exists()  # ONNX Runtime's device id went private


# help texts and list options ------------------------------------------------------------------------------------------

def _actions(parser: argparse.ArgumentParser, prefix="edgekit"):
    for a in parser._actions:
        yield prefix, a
        if isinstance(a, argparse._SubParsersAction):
            for name, sub in a.choices.items():
                yield from _actions(sub, f"{prefix} {name}")


def test_every_option_has_a_help_text():
    """About 20 options had no help text: every argument of every command has one now."""
    from edgekit.cli.main import build_parser

    missing = [f"{cmd} {'/'.join(a.option_strings) or a.dest}" for cmd, a in _actions(build_parser())
               if not (a.help and a.help.strip())]
    assert missing == []


def test_list_options_take_the_comma_form():
    """List options mixed `640 480` with `256,320`: the comma form is the contract; export's --imgsz (H W before)
    reads H,W, still reads the old space form, and a bad value is one line showing the comma form."""
    from edgekit.cli.main import build_parser

    p = build_parser()
    assert p.parse_args(["export", "w.pt", "--imgsz", "640,480"]).imgsz == [640, 480]
    assert p.parse_args(["export", "w.pt", "--imgsz", "640", "480"]).imgsz == [640, 480]
    assert p.parse_args(["bench", "m.onnx", "--batch", "1,8"]).batch == [1, 8]
    assert p.parse_args(["train-export", "--imgsz", "256,320"]).imgsz == "256,320"
    r = _edgekit("export", "w.pt", "--imgsz", "640,480,3")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == ("edgekit export: error: --imgsz 640,480,3: expected N or H,W in "
                                                 "pixels, e.g. --imgsz 640 or --imgsz 640,480")
    # only path lists (several files or folders) are space-separated: a comma may be part of a path
    spaced = sorted(f"{cmd} {a.option_strings[0]}" for cmd, a in _actions(p)
                    if a.nargs in ("+", "*") and a.option_strings)
    assert spaced == ["edgekit bench --compare", "edgekit export --imgsz", "edgekit report --merge"]


def test_main_in_process_restores_what_it_changed():
    """main() ignores SIGXFSZ and adds an import hook for the time of one command only; the environment is as before."""
    import signal

    from edgekit.cli.main import main

    from edgekit._home import _Finder

    before = (signal.getsignal(signal.SIGXFSZ), dict(os.environ))
    assert main(["doctor", "-q"]) == 0
    assert (signal.getsignal(signal.SIGXFSZ), dict(os.environ)) == before
    assert not [f for f in sys.meta_path if isinstance(f, _Finder)]  # (other packages may add their own finders)


@pytest.mark.parametrize("code", ["ENOSPC", "EDQUOT"])
def test_no_space_and_quota_name_the_target(tmp_path, code):
    """Item 7 for a full disk and an exhausted quota (not simulable without a mount): the OSError a write raises
    becomes the EdgekitError naming the target, the temp file goes, the old file stays."""
    import errno

    from edgekit.errors import EdgekitError
    from edgekit.io import atomic_path

    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    with pytest.raises(EdgekitError, match=rf"^{target}: cannot write: .*any previous model.onnx is unchanged"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)))
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"] and target.read_bytes() == b"old"


def test_run_log_over_file_size_limit_stops_with_one_warning(tmp_path):
    """Item 7 for the run log (train-export.log): a failed log write is one warning line, not a logging traceback."""
    code = ("import signal, sys\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "from edgekit._log import LOG, cli_logging, log_file\n"
            "with cli_logging(-1), log_file(sys.argv[1]):\n"
            "    for i in range(3000):\n        LOG.debug('x' * 100)\n")
    r = subprocess.run(["bash", "-c", 'ulimit -f 100; exec "$@"', "bash", sys.executable, "-c", code,
                        str(tmp_path / "run.log")], capture_output=True, text=True, env=_env())
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip().splitlines() == [f"warning: {tmp_path / 'run.log'}: cannot write the log: file too large "
                                             f"(over the file-size limit, ulimit -f); the log stops here"]
