"""The README's examples run as written (issue 19, R2: "The README's Python example fails as written:
`runs/demo/model.onnx` is never created, and `bus.jpg` is not in the repository")."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def _section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end > 0 else None]


def _commands(block: str) -> list[str]:
    """Shell commands of a bash block: continuation lines joined, comments dropped, `a && b` split."""
    text = re.sub(r"\\\n\s*", " ", block)
    out = []
    for line in text.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        out += [c.strip() for c in line.split("&&") if c.strip()]
    return out


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.slow
def test_readme_python_example_runs_as_written(tmp_path):
    """The Embedding section: its bash step (export of the bundled weights into runs/demo), then its python block,
    unchanged, in a fresh folder laid out like the repository (the README's commands run from its root)."""
    pytest.importorskip("ultralytics")
    pytest.importorskip("onnxruntime")
    section = _section("Embedding")
    pys = _blocks(section, "python")
    assert pys, "no python example in the Embedding section"
    bash = _blocks(section[:section.index("```python")], "bash")[0]  # the step just before the example
    weights = ROOT / "edgekit" / "assets" / "yolov8n_coco.pt"
    (tmp_path / "edgekit" / "assets").mkdir(parents=True)
    (tmp_path / "edgekit" / "assets" / weights.name).symlink_to(weights)  # the repository path the README names
    for cmd in _commands(bash):
        argv = shlex.split(cmd)
        assert argv[0] == "edgekit", cmd
        r = subprocess.run([sys.executable, "-m", "edgekit", *argv[1:]], cwd=tmp_path, env=_env(),
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, (cmd, r.stderr)
    for code in pys:
        r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr
    assert "[[" in r.stdout and "]]" in r.stdout, r.stdout  # boxes were printed (the demo image has vehicles)


def _subparsers():
    import argparse

    from edgekit.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, sub.choices


def test_readme_commands_table_names_only_real_options():
    """Every `--option` the commands table shows exists on that command."""
    _, commands = _subparsers()
    rows = [line for line in README.splitlines() if line.startswith("| `edgekit ")]
    assert len(rows) >= 10
    wrong = []
    for row in rows:
        for usage in re.findall(r"`(edgekit [^`]+)`", row.split(" | ")[0]):
            name = usage.split()[1]
            assert name in commands, usage
            known = {s for a in commands[name]._actions for s in a.option_strings}
            wrong += [f"{name} {flag}" for flag in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", usage)
                      if flag not in known]
    assert wrong == []


def test_readme_shell_commands_parse():
    """Every concrete `edgekit ...` command in the README's bash blocks parses with the real parser (running them
    needs a Ray cluster, Triton or super-gradients; the Embedding one runs in the test above)."""
    parser, _ = _subparsers()
    cmds = [c for b in _blocks(README, "bash") for c in _commands(b) if c.startswith("edgekit")]
    assert len(cmds) >= 4
    for cmd in cmds:
        try:
            parser.parse_args(shlex.split(cmd)[1:])
        except SystemExit as e:
            pytest.fail(f"README command does not parse ({e.code}): {cmd}")
