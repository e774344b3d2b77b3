"""Issue 19 (R2), items 1, 2, 3, 5 and the label BOM: never run a user's yaml, never write into or over an input,
one run per output folder at a time."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgekit.cli.main import main
from treesum import tree_sha256 as checksum  # noqa: E402  (tests/treesum.py)

ROOT = Path(__file__).resolve().parents[1]
IMGSZ = 64


def run_cli(capsys, *argv):
    code = main(list(map(str, argv)))
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(code, err, *expect):
    assert code == 2, err
    assert err.count("\n") == 1, err
    for e in expect:
        assert e in err, err


@pytest.fixture()
def ds(coco8, copy_dataset) -> Path:
    """coco8 copied into tmp (data.yaml beside images/ and labels/)."""
    return copy_dataset(coco8)


def _package_yaml() -> dict:
    import yaml
    from ultralytics.utils import ROOT as UL

    return yaml.safe_load((UL / "cfg" / "models" / "v8" / "yolov8.yaml").read_text())


def _evil_yaml(tmp_path: Path, edit, name="evil.yaml") -> tuple[Path, Path]:
    """Ultralytics' own yolov8.yaml with one edit; (the yaml, the file its payload would create)."""
    import yaml

    marker = tmp_path / "PWNED"
    doc = _package_yaml()
    edit(doc, marker)
    p = tmp_path / name
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p, marker


def _activation(doc, marker):
    doc["activation"] = f"__import__('pathlib').Path({str(marker)!r}).touch() or __import__('torch').nn.SiLU()"


def _nested_model(doc, marker):
    """A row building a whole DetectionModel from another (unchecked) yaml: its activation would be eval()ed."""
    import yaml

    inner = dict(_package_yaml())
    _activation(inner, marker)
    nested = marker.parent / "inner.yaml"
    nested.write_text(yaml.safe_dump(inner))
    doc["backbone"][1] = [-1, 1, "DetectionModel", [str(nested)]]


def _function_layer(doc, marker):
    doc["backbone"][1] = [-1, 1, "torch_safe_load", [str(marker)]]  # a function in ultralytics.nn.tasks


def _parser_variable(doc, marker):
    doc["head"][0] = [-1, 1, "nn.Upsample", ["d", 2, "nearest"]]  # 'd': parse_model's whole yaml dict


def _downloading_layer(doc, marker):
    doc["backbone"][0] = [-1, 1, "TorchVision", [64, "resnet18", "DEFAULT", True, 2]]


EVIL = [
    (_activation, "model yaml activation \"__import__('pathlib')"),
    (_nested_model, "model yaml layer 'DetectionModel' is not a torch or Ultralytics nn.Module layer (backbone[1]"),
    (_function_layer, "model yaml layer 'torch_safe_load' is not a torch or Ultralytics nn.Module layer"),
    (_parser_variable, "model yaml head[0]: argument 'd' names a variable of Ultralytics' model parser"),
    (_downloading_layer, "model yaml layer 'TorchVision' is not a torch or Ultralytics nn.Module layer"),
]


@pytest.mark.parametrize("trust", [False, True], ids=["default", "trust-checkpoint"])
@pytest.mark.parametrize("edit, message", EVIL, ids=[e[0].__name__.strip("_") for e in EVIL])
def test_item1_train_arch_yaml_that_ultralytics_would_eval_is_refused(edit, message, trust, ds, tmp_path, capsys):
    """Item 1: `edgekit train evil.yaml --strategy scratch` ran the yaml's code and exited 0. Now: exit 2, one line
    naming the file and the key, nothing run, nothing written; --trust-checkpoint (a pickle opt-in) does not cover
    it."""
    pytest.importorskip("ultralytics")
    evil, marker = _evil_yaml(tmp_path, edit)
    before = checksum(ds.parent)
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", evil, "--data", ds, "--strategy", "scratch", "--epochs", 1,
                           "--imgsz", IMGSZ, "-o", out, *(["--trust-checkpoint"] if trust else []))
    one_line_error(code, err, f"edgekit train: error: {evil}: ", message)
    assert not marker.exists() and not out.exists()
    assert checksum(ds.parent) == before


def test_item1_train_export_models_yaml_refused_before_any_work(ds, tmp_path, capsys):
    """Item 1: train-export --models evil.yaml is refused before any trial starts (and writes no log into -o)."""
    pytest.importorskip("ultralytics")
    evil, marker = _evil_yaml(tmp_path, _activation)
    out = tmp_path / "sweep"
    code, _, err = run_cli(capsys, "train-export", "--data", ds, "--models", evil, "--strategies", "scratch",
                           "--epochs", 1, "--imgsz", IMGSZ, "-o", out)
    one_line_error(code, err, f"{evil}: model yaml activation")
    assert not marker.exists() and not out.exists()


def test_item1_embedded_yaml_nested_model_refused(weights, tmp_path, capsys):
    """Item 1, the same check for a .pt: a DetectionModel row in the checkpoint's yaml (it would load another yaml)."""
    import torch

    ckpt = torch.load(weights, map_location="cpu", weights_only=False)  # the bundled file: trusted
    ckpt["model"].yaml["backbone"][1][2] = "DetectionModel"
    pt = tmp_path / "doctored.pt"
    torch.save(ckpt, pt)
    code, _, err = run_cli(capsys, "export", pt, "--imgsz", IMGSZ, "--no-parity", "-o", tmp_path / "o")
    one_line_error(code, err, "model yaml layer 'DetectionModel' is not a torch or Ultralytics nn.Module layer",
                   "--trust-checkpoint")


def test_item1_ultralytics_own_yamls_pass(tmp_path):
    """Item 1: the check is an allow-list of what real Ultralytics yamls use: every one of the installed package's
    model yamls passes, except those building a TorchVision layer (it downloads weights)."""
    pytest.importorskip("ultralytics")
    from ultralytics.utils import ROOT as UL

    from edgekit.checkpoint import UnsafeModelYaml, check_arch_yaml

    refused = []
    for y in sorted((UL / "cfg" / "models").rglob("*.yaml")):
        try:
            check_arch_yaml(y)
        except UnsafeModelYaml as e:
            refused.append((y.name, str(e)))
    assert refused and all("'TorchVision'" in msg for _, msg in refused), refused


def test_item1_yaml_name_resolves_to_the_package_never_the_cwd(ds, tmp_path, monkeypatch, capsys):
    """Item 1: `train yolov8n.yaml` trains Ultralytics' own yolov8.yaml at scale n from a checked private copy; an
    evil yolov8.yaml in the working directory (Ultralytics' own lookup would pick it up) is never read."""
    pytest.importorskip("ultralytics")
    import json

    evil, marker = _evil_yaml(tmp_path, _activation, name="yolov8.yaml")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "scratch"
    code, _, err = run_cli(capsys, "train", "yolov8n.yaml", "--data", ds, "--strategy", "scratch", "--epochs", 1,
                           "--imgsz", IMGSZ, "--batch", 4, "-o", out)
    assert code == 0, err
    assert not marker.exists()
    doc = json.loads((out / "train.json").read_text())
    assert doc["weights_init"] == "yolov8n.yaml" and doc["trainable_params"][0] < 3_500_000  # scale n (3.2M)
    assert not (out / ".edgekit.lock").exists()


# --- items 2 and 3: outputs never inside or over inputs ------------------------------------------------------------

@pytest.mark.parametrize("where, relation", [
    (lambda d: d, "is the input folder"),                                  # the issue's `-o DS`
    (lambda d: d / "images" / "train" / "runs", "is inside the input folder"),
    (lambda d: d / "runs", "is inside the input folder"),                  # a new folder in the dataset root
    (lambda d: d / "labels", "contains the input folder"),
    (lambda d: d.parent, "contains the input"),
], ids=["dataset-folder", "image-folder", "new-folder-in-root", "labels-parent", "around-dataset"])
def test_item2_train_output_in_the_dataset_refused(where, relation, ds, weights, tmp_path, capsys):
    """Item 2: `train ... --data DS/data.yaml -o DS` overwrote data.yaml (exit 0). Now exit 2, one line naming both
    paths, and every file of the dataset unchanged, none added."""
    root = ds.parent
    before = checksum(tmp_path)
    out = where(root)
    code, _, err = run_cli(capsys, "train", weights, "--data", ds, "--epochs", 1, "--imgsz", IMGSZ, "-o", out)
    one_line_error(code, err, f"edgekit train: error: -o {out} {relation}")
    assert checksum(tmp_path) == before


def test_item2_symlinked_output_into_the_dataset_refused(ds, weights, tmp_path, capsys):
    """Item 2 through a symbolic link: the output folder resolves into the dataset."""
    link = tmp_path / "link"
    link.symlink_to(ds.parent / "images", target_is_directory=True)
    before = checksum(ds.parent)
    code, _, err = run_cli(capsys, "train", weights, "--data", ds, "--epochs", 1, "-o", link / "train" / "run")
    one_line_error(code, err, f"-o {link / 'train' / 'run'} is inside the input folder")
    assert checksum(ds.parent) == before


def test_item2_train_export_into_dataset_writes_no_log(ds, tmp_path, capsys):
    """Item 2 for train-export: refused before its log file (train-export.log) is opened in -o."""
    before = checksum(ds.parent)
    code, _, err = run_cli(capsys, "train-export", "--data", ds, "--epochs", 1, "-o", ds.parent)
    one_line_error(code, err, f"edgekit train-export: error: -o {ds.parent} is the input folder {ds.parent}")
    assert checksum(ds.parent) == before


def test_item2_json_over_an_input_refused(ds, onnx160, tmp_path, capsys):
    """Item 2 for output files: eval --json must not overwrite the data.yaml, nor go into a label folder, nor into the
    dataset root beside the data.yaml (a new name there is still inside the input); a sibling folder is fine."""
    before = checksum(ds.parent)
    code, _, err = run_cli(capsys, "eval", onnx160, "--data", ds, "--json", ds)
    one_line_error(code, err, f"--json {ds} would overwrite the input file {ds}")
    label_json = ds.parent / "labels" / "val" / "eval.json"
    code, _, err = run_cli(capsys, "eval", onnx160, "--data", ds, "--json", label_json)
    one_line_error(code, err, f"--json {label_json} is inside the input folder")
    beside = ds.parent / "eval.json"
    code, _, err = run_cli(capsys, "eval", onnx160, "--data", ds, "--json", beside)
    one_line_error(code, err, f"--json {beside} is inside the input folder {ds.parent}")
    assert checksum(ds.parent) == before
    code, _, err = run_cli(capsys, "eval", onnx160, "--data", ds, "--json", tmp_path / "out" / "eval.json",
                           "--limit", 2)
    assert code == 0, err


@pytest.mark.parametrize("trust", [False, True], ids=["default", "trust-checkpoint"])
def test_item3_train_output_holding_the_input_checkpoint_refused(trust, ds, weights, tmp_path, capsys):
    """Item 3: `train OUT/best.pt -o OUT` overwrote (with --trust-checkpoint: deleted) the input checkpoint. Now
    exit 2, one line naming both paths, the checkpoint unchanged and nothing added to OUT."""
    out = tmp_path / "OUT"
    out.mkdir()
    shutil.copyfile(weights, out / "best.pt")
    before = checksum(out)
    code, _, err = run_cli(capsys, "train", out / "best.pt", "--data", ds, "--epochs", 1, "--imgsz", IMGSZ,
                           "-o", out, *(["--trust-checkpoint"] if trust else []))
    one_line_error(code, err, f"edgekit train: error: -o {out} contains the input file {out / 'best.pt'}")
    assert checksum(out) == before


def test_item3_quantize_and_deploy_outputs_checked(onnx160_copy, ds, tmp_path, capsys):
    """Items 2/3 for quantize (-o the dataset folder) and deploy (--triton around the artifact): refused, no change."""
    before = checksum(tmp_path)
    code, _, err = run_cli(capsys, "quantize", onnx160_copy, "--data", ds, "--backend", "onnxruntime",
                           "-o", ds.parent / "images")
    one_line_error(code, err, f"-o {ds.parent / 'images'} is the input folder")
    repo = onnx160_copy.parent
    code, _, err = run_cli(capsys, "deploy", onnx160_copy, "--triton", repo)
    one_line_error(code, err, f"--triton {repo} contains the input file {onnx160_copy}")
    assert checksum(tmp_path) == before


# --- item 5: one run per output folder ----------------------------------------------------------------------------

def _holder(folder: Path) -> subprocess.Popen:
    """Another process holding `folder` through edgekit's lock, as a running command does."""
    code = textwrap.dedent(f"""
        import sys, time
        from edgekit.outputs import claim_output
        with claim_output({str(folder)!r}, command="train-export"):
            print("held", flush=True)
            time.sleep(120)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    assert p.stdout.readline().strip() == "held"  # bounded: the child prints or exits within its start-up time
    return p


def test_item5_second_run_into_a_held_folder_refused_and_freed_when_holder_dies(ds, weights, tmp_path, capsys):
    """Item 5: two train-export runs into one -o raced (one died with SIGBUS). Now the second run is refused with
    one line naming the folder and the holder's pid (exit 2, nothing of the holder's touched); once the holder is
    killed (SIGKILL) the OS has released the lock and the next run proceeds."""
    out = tmp_path / "run"
    p = _holder(out)
    try:
        (out / "keep.txt").write_text("the holder's file")
        before = checksum(out)
        for argv in (["train-export", "--data", ds, "--epochs", 1, "-o", out],
                     ["train", weights, "--data", ds, "--epochs", 1, "-o", out],
                     ["export", weights, "--imgsz", IMGSZ, "--no-parity", "-o", out]):
            code, _, err = run_cli(capsys, *argv)
            one_line_error(code, err, f"{out}: another edgekit run is writing to this output folder "
                                      f"(pid {p.pid}, edgekit train-export)")
        assert checksum(out) == before
    finally:
        p.kill()
        p.wait(timeout=30)
    code, _, err = run_cli(capsys, "export", weights, "--imgsz", IMGSZ, "--no-parity", "-o", out)
    assert code == 0, err
    assert (out / "model.onnx").exists() and (out / "keep.txt").read_text() == "the holder's file"
    assert not (out / ".edgekit.lock").exists()


def test_item5_lock_is_per_folder_and_reentrant_in_one_thread(tmp_path):
    """Item 5: the driver's nested claims of its own folder (CLI, then Pipeline.run) do not deadlock; another thread
    of the same process is refused."""
    import threading

    from edgekit.outputs import OutputBusy, claim_output

    out = tmp_path / "run"
    errors = []
    with claim_output(out, command="a"), claim_output(out, command="a"), claim_output(out / "trial", command="b"):
        t = threading.Thread(target=lambda: _try_claim(out, errors))
        t.start()
        t.join(timeout=30)
    assert len(errors) == 1 and isinstance(errors[0], OutputBusy)
    with claim_output(out, command="c"):  # released
        pass


def _try_claim(out, errors):
    from edgekit.outputs import claim_output

    try:
        with claim_output(out, command="thread"):
            pass
    except Exception as e:  # collected for the assertion in the test
        errors.append(e)


# --- a BOM in a label file -----------------------------------------------------------------------------------------

def test_label_bom_at_start_accepted(ds):
    """Small item 'A BOM in a label file gives non-numeric value in 2 ...': a UTF-8 BOM at the start of a label file
    (as Windows editors write) is accepted, with the same labels as without it."""
    from edgekit.data import load_dataset

    label = sorted((ds.parent / "labels" / "val").glob("*.txt"))[0]
    plain = {s.image.name: (s.classes.tolist(), s.boxes.tolist()) for s in load_dataset(ds).samples("val")}
    label.write_bytes(b"\xef\xbb\xbf" + label.read_bytes())
    bom = {s.image.name: (s.classes.tolist(), s.boxes.tolist()) for s in load_dataset(ds).samples("val")}
    assert bom == plain


def test_label_odd_character_shown_visibly(ds, weights, tmp_path, capsys):
    """Small item, the other half: an invisible character elsewhere in a label file is named visibly (escaped)."""
    label = sorted((ds.parent / "labels" / "val").glob("*.txt"))[0]
    lines = label.read_text().splitlines()
    label.write_text("\n".join([lines[0], "\u200b" + lines[0], *lines[1:]]) + "\n")
    code, _, err = run_cli(capsys, "train", weights, "--data", ds, "--epochs", 1, "-o", tmp_path / "run")
    one_line_error(code, err, f"{label}:2: non-numeric value in '\\u200b{lines[0]}'")


def test_item2_guard_rules_for_named_outputs(tmp_path):
    """Items 2/3, the rules behind report --merge -o and quantize/export -o (commands that write named files):
    not into an input folder (a merged run), not over an input file; beside one, or around a run, is fine."""
    from edgekit.outputs import OutputRefused, check_outputs

    run = tmp_path / "runs" / "a"
    (run / "stages").mkdir(parents=True)
    (run / "report.json").write_text("{}")
    names = ["report.md", "report.json", "pareto.png"]
    for out, relation in ((run, "is the input folder"), (run / "merged", "is inside the input folder")):
        with pytest.raises(OutputRefused, match=f"-o {out} {relation} {run}: edgekit never writes"):
            check_outputs(out, [run], files=names)
    check_outputs(tmp_path / "runs", [run], files=names)  # around the run: its report.json is not touched
    weights = tmp_path / "w" / "model.onnx"
    weights.parent.mkdir()
    weights.write_bytes(b"x")
    with pytest.raises(OutputRefused, match="would write .*model.onnx over the input file"):
        check_outputs(weights.parent, [weights], files=["model.onnx", "model.json"])
    check_outputs(weights.parent, [weights], files=["model_int8_openvino"])  # quantize's default: beside its input
