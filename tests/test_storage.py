"""The sweep's storage: a shared folder as is, or a URI mirrored on each node (two mirrors stand for two nodes)."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from edgekit.errors import EdgekitError, MissingDependency
from edgekit.sweep.storage import Storage

FILES = {
    "train.json": b'{"epochs": 1}\n',
    "weights/best.pt": bytes(range(256)) * 40,
    "export/model.onnx": b"\x08\x07onnx" * 100,
    "export/int8/openvino/model.xml": b"<net/>",
}


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _write(folder: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)


@pytest.fixture
def nodes(tmp_path):
    """A file:// storage and two nodes' views of it, each with its own mirror."""
    pytest.importorskip("pyarrow.fs")
    remote = tmp_path / "bucket" / "sweep"
    uri = remote.as_uri()
    return remote, Storage(uri, mirror_base=tmp_path / "nodeA"), Storage(uri, mirror_base=tmp_path / "nodeB")


def test_local_path_is_the_root_and_pull_push_do_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # a shared folder needs no pyarrow
    monkeypatch.setitem(sys.modules, "pyarrow.fs", None)
    s = Storage("runs/sweep")
    assert s.root == tmp_path / "runs" / "sweep" and s.root.is_absolute()
    assert not s.is_remote and s.uri == str(tmp_path / "runs" / "sweep") and str(s) == s.uri
    assert s.pull("trial/a") == s.root / "trial" / "a"
    _write(s.root / "trial", FILES)
    s.push("trial")
    assert _tree(s.root / "trial") == FILES and not (s.root / "trial" / "a").exists()


def test_two_nodes_share_a_trial_folder_through_a_uri(nodes):
    remote, a, b = nodes
    assert a.is_remote and a.root != b.root and a.root != remote
    trial = a.pull("trials/yolov8n-64/head")
    assert trial == a.root / "trials" / "yolov8n-64" / "head" and not trial.exists()  # nothing remote: start fresh
    _write(trial, FILES)
    a.push("trials/yolov8n-64/head")
    remote_trial = remote / "trials" / "yolov8n-64" / "head"
    assert _tree(remote_trial) == FILES  # no temp upload left behind either

    got = b.pull("trials/yolov8n-64/head")
    assert got == b.root / "trials" / "yolov8n-64" / "head" and _tree(got) == FILES

    changed = bytes(reversed(FILES["weights/best.pt"]))  # same size, other bytes: size alone cannot tell them apart
    (got / "weights" / "best.pt").write_bytes(changed)
    (got / "eval.json").write_bytes(b'{"map50": 0.5}')
    b.push("trials/yolov8n-64/head")
    untouched = (trial / "train.json").stat().st_ino
    a.pull("trials/yolov8n-64/head")
    assert _tree(trial) == {**FILES, "weights/best.pt": changed, "eval.json": b'{"map50": 0.5}'}
    assert (trial / "train.json").stat().st_ino == untouched  # unchanged on both sides: not transferred again


def test_pull_replaces_a_local_edit_that_was_never_pushed(nodes):
    _, a, _ = nodes
    _write(a.root / "t", FILES)
    a.push("t")
    stale = a.root / "t" / "export" / "model.onnx"
    stale.write_bytes(b"X" * len(FILES["export/model.onnx"]))  # same size, written after the push
    a.pull("t")
    assert stale.read_bytes() == FILES["export/model.onnx"]


def test_push_and_pull_a_single_file(nodes):
    remote, a, b = nodes
    _write(a.root, {"config.json": b"{}"})
    a.push("config.json")
    assert (remote / "config.json").read_bytes() == b"{}"
    assert b.pull("config.json").read_bytes() == b"{}"
    assert b.pull("missing.json") == b.root / "missing.json" and not (b.root / "missing.json").exists()


def test_pull_prune_drops_local_files_the_storage_lacks(nodes):
    _, a, b = nodes
    _write(a.root / "t", FILES)
    a.push("t")
    _write(b.root / "t", {"leftover/partial.onnx": b"half", "train.json": b"old"})
    b.pull("t")
    assert (b.root / "t" / "leftover" / "partial.onnx").exists()  # default: extra local files are kept
    b.pull("t", prune=True)
    assert _tree(b.root / "t") == FILES and not (b.root / "t" / "leftover").exists()
    b.pull("gone", prune=True)
    assert not (b.root / "gone").exists()


def test_mirror_root_is_fixed_by_the_uri(tmp_path):
    pytest.importorskip("pyarrow.fs")
    uri = (tmp_path / "store").as_uri()
    s = Storage(uri)
    assert s.root.parent == Path(tempfile.gettempdir()) / "edgekit-storage" and s.root.is_absolute()
    assert Storage(uri).root == s.root == Storage(uri + "/").root == Storage("FILE" + uri[4:]).root
    assert Storage(uri, mirror_base=tmp_path / "m").root.name == s.root.name
    assert Storage((tmp_path / "other").as_uri()).root != s.root
    assert s.uri == uri and str(Storage(uri + "?x=1")) == uri


def test_pickle_round_trip_after_use(nodes):
    remote, a, _ = nodes
    _write(a.root / "t", FILES)
    a.push("t")  # opens the filesystem; pickling must still ship only strings
    data = pickle.dumps(a)
    assert b"pyarrow" not in data
    c = pickle.loads(data)
    assert (c.uri, c.root, c.is_remote) == (a.uri, a.root, True)
    (c.root / "t" / "train.json").write_bytes(b"{}")
    c.push("t/train.json")
    assert (remote / "t" / "train.json").read_bytes() == b"{}"


def test_rel_may_not_leave_the_storage(nodes):
    _, a, _ = nodes
    with pytest.raises(ValueError, match="inside the storage"):
        a.pull("t/../../etc")


def test_importing_the_module_does_not_import_pyarrow():
    code = "import sys, edgekit.sweep.storage; print('pyarrow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("", "--storage: '': empty: give a folder every node sees, or a URI such as s3://bucket/prefix"),
        ("ftp://x", "--storage: ftp://x: pyarrow.fs cannot open it: Unrecognized filesystem type in URI: ftp://x"),
        ("s3://a b/c", "--storage: s3://a b/c: pyarrow.fs cannot open it: "
                       "Cannot parse URI: 's3://a b/c' due to syntax error at character ' ' (position 6)"),
        ("file:x", "--storage: file:x: pyarrow.fs cannot open it: File URI cannot be relative: 'file:x'"),
        ("file://host/x", "--storage: file://host/x: pyarrow.fs cannot open it: "
                          "Unsupported hostname in non-Windows local URI: 'file://host/x'"),
        ("s3://bucket/p?foo=1", "--storage: s3://bucket/p: pyarrow.fs cannot open it: "
                                "Unexpected query parameter in S3 URI: 'foo'"),
        ("s3://", "--storage: s3://: the URI names no bucket or folder"),
        ("file:///", "--storage: file:///: the URI names no bucket or folder"),
    ],
)
def test_bad_input_storage_spec(spec, message):
    if spec:
        pytest.importorskip("pyarrow.fs")
    with pytest.raises(EdgekitError) as e:
        Storage(spec)
    assert str(e.value) == message and e.value.exit_code == 2


def test_bad_input_storage_is_a_file(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("x")
    with pytest.raises(EdgekitError) as e:
        Storage(str(f))
    assert str(e.value) == f"--storage: {f}: is a file, not a folder" and e.value.exit_code == 2


def test_bad_input_storage_uri_without_pyarrow(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.fs", None)
    with pytest.raises(MissingDependency) as e:
        Storage((tmp_path / "s").as_uri())
    assert str(e.value) == "pyarrow is not installed (needed for --storage URIs): pip install 'edgekit[ray]'"
    assert e.value.exit_code == 3
