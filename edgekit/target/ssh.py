"""`--target ssh://user@host[:port][/device]`: edgekit measures on a device, through the system OpenSSH client.

The device runs a runtime-only `edgekit` (`pip install "edgekit[openvino,onnxruntime,eval]"`): no torch, Ultralytics
or Ray. The host sends what a command reads (the artifact with its sidecar, the images of one split) once, keyed by
the sha256 of its content, into `${XDG_CACHE_HOME:-~/.cache}/edgekit-remote/<sha>/` on the device (unpacked in a
temp folder there, then renamed), runs `edgekit -q <command> ... --json -` there and reads back the same JSON a
local run writes. Host keys are checked against known_hosts with StrictHostKeyChecking=yes: an unknown or changed key is
refused, never accepted. Keys come from the agent or ~/.ssh as ssh finds them; for scripts and tests:
  EDGEKIT_SSH_IDENTITY     a private key file (ssh -i)
  EDGEKIT_SSH_KNOWN_HOSTS  the known_hosts file to check against (default ~/.ssh/known_hosts)
  EDGEKIT_SSH_CONFIG       the ssh config file (ssh -F; default ~/.ssh/config)
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shlex
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import EdgekitError

CACHE = '"${XDG_CACHE_HOME:-$HOME/.cache}/edgekit-remote"'  # expanded by the device's shell
CONNECT_TIMEOUT_S = 10
ALIVE_INTERVAL_S, ALIVE_COUNT = 5, 3  # a silent connection is declared lost after about 15 s
SSH_FAILED = 255  # ssh's own exit status for a connection or authentication failure


class TargetError(EdgekitError):
    """The device could not be reached, refused us, or the connection was lost."""


class RemoteCommandError(EdgekitError):
    """The device's edgekit ran and failed: its one-line message, with its exit status."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def parse_target(text: str) -> "SshTarget":
    """ssh://[user@]host[:port][/device] -> SshTarget (device defaults to cpu)."""
    if isinstance(text, SshTarget):
        return text
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        raise EdgekitError(f"--target {text}: the port must be a number from 1 to 65535") from None
    if parts.scheme != "ssh" or not parts.hostname or parts.query or parts.fragment or parts.password:
        raise EdgekitError(f"--target {text}: expected ssh://user@host[:port][/device], e.g. ssh://pi@10.0.0.7/cpu")
    device = parts.path.lstrip("/") or "cpu"
    if "/" in device:
        raise EdgekitError(f"--target {text}: one device after the host, e.g. ssh://nvidia@orin/cuda:0")
    return SshTarget(host=parts.hostname, user=parts.username, port=port, device=device)


@dataclass
class Bundle:
    """Files to send as one content-addressed folder: arcname -> local file or bytes."""

    entries: dict[str, Path | bytes] = field(default_factory=dict)

    def add(self, path: Path, arcname: str) -> None:
        """A file, or a folder with everything under it."""
        path = Path(path)
        if path.is_dir():
            for p in sorted(path.rglob("*")):
                if p.is_file():
                    self.entries[f"{arcname}/{p.relative_to(path).as_posix()}"] = p
        else:
            self.entries[arcname] = path

    def key(self) -> str:
        """sha256 over the names and contents: the folder's name on the device."""
        h = hashlib.sha256()
        for name in sorted(self.entries):
            h.update(name.encode() + b"\0" + _sha256(self.entries[name]).encode() + b"\0")
        return h.hexdigest()

    def write_tar(self, f) -> None:
        with tarfile.open(fileobj=f, mode="w") as tar:
            for name in sorted(self.entries):
                src = self.entries[name]
                data = src if isinstance(src, bytes) else Path(src).read_bytes()
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))


def _sha256(src: Path | bytes) -> str:
    if isinstance(src, bytes):
        return hashlib.sha256(src).hexdigest()
    h = hashlib.sha256()
    with open(src, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _known_hosts() -> str:
    return os.environ.get("EDGEKIT_SSH_KNOWN_HOSTS") or "~/.ssh/known_hosts"


@dataclass(frozen=True)
class SshTarget:
    host: str
    user: str | None = None
    port: int | None = None
    device: str = "cpu"

    @property
    def url(self) -> str:
        user = f"{self.user}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port else ""
        return f"ssh://{user}{host}{port}/{self.device}"

    def _argv(self) -> list[str]:
        argv = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}", "-o", f"ServerAliveInterval={ALIVE_INTERVAL_S}",
                "-o", f"ServerAliveCountMax={ALIVE_COUNT}", "-o", "LogLevel=ERROR"]
        if os.environ.get("EDGEKIT_SSH_CONFIG"):
            argv += ["-F", os.environ["EDGEKIT_SSH_CONFIG"]]
        if os.environ.get("EDGEKIT_SSH_KNOWN_HOSTS"):
            argv += ["-o", f"UserKnownHostsFile={os.environ['EDGEKIT_SSH_KNOWN_HOSTS']}", "-o",
                     "GlobalKnownHostsFile=/dev/null"]
        if os.environ.get("EDGEKIT_SSH_IDENTITY"):
            argv += ["-i", os.environ["EDGEKIT_SSH_IDENTITY"], "-o", "IdentitiesOnly=yes"]
        if self.port:
            argv += ["-p", str(self.port)]
        if self.user:
            argv += ["-l", self.user]
        return argv + ["--", self.host]

    def run(self, script: str, stdin=None) -> subprocess.CompletedProcess:
        """Run a POSIX shell script on the device; an SSH-level failure raises TargetError (one line)."""
        try:
            proc = subprocess.run(self._argv() + [script], stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                  capture_output=True)
        except FileNotFoundError:
            raise TargetError(f"{self.url}: no ssh client on this host: install OpenSSH (apt install openssh-client)"
                              ) from None
        if proc.returncode == SSH_FAILED:
            raise TargetError(self._ssh_failure(proc.stderr.decode("utf-8", "replace")))
        return proc

    def _ssh_failure(self, err: str) -> str:
        """ssh's stderr -> one line that says what was refused or lost, and where."""
        shown = f"[{self.host}]:{self.port}" if self.port else self.host
        if "REMOTE HOST IDENTIFICATION HAS CHANGED" in err or "Host key verification failed" in err:
            if "HAS CHANGED" in err:
                m = re.search(r"Offending \S+ key in (\S+?):(\d+)", err)
                where = f"{m.group(1)} line {m.group(2)}" if m else _known_hosts()
                return (f"{self.url}: the host key of {shown} has CHANGED since it was recorded in {where}: refused "
                        f"(if the device was reinstalled, check its new fingerprint and replace that line)")
            return (f"{self.url}: the host key of {shown} is not in {_known_hosts()}: refused (unknown host; check "
                    f"the device's fingerprint, then add it to that file, e.g. with ssh-keyscan)")
        lines = [x.strip() for x in err.splitlines() if x.strip() and not x.startswith("@")]
        last = lines[-1] if lines else "ssh failed without a message"
        lost = re.search(r"closed by remote host|not responding|Broken pipe|Connection reset|closed\.?$", last)
        what = "connection lost" if lost else "cannot connect"
        return f"{self.url}: {what}: {last}"

    def probe(self, keys: list[str] = ()) -> tuple[str, set[str]]:
        """(the device's `edgekit --version`, which content keys its cache holds) in one round trip."""
        checks = "".join(f'[ -d "$d/{k}" ] && echo "have {k}"; ' for k in keys)
        proc = self.run(f"command -v edgekit >/dev/null 2>&1 || exit 127; edgekit --version; d={CACHE}; {checks}true")
        if proc.returncode == 127:
            raise TargetError(f"{self.url}: no `edgekit` on the device's PATH: install it there, e.g. "
                              f"pip install \"edgekit[openvino,onnxruntime,eval]\"")
        lines = [x.split() for x in proc.stdout.decode("utf-8", "replace").splitlines()]  # after any login banner
        version = next((x[1] for x in lines if len(x) == 2 and x[0] == "edgekit"), None)
        if proc.returncode != 0 or version is None:
            raise TargetError(f"{self.url}: `edgekit --version` failed on the device (exit {proc.returncode})")
        return version, {x[1] for x in lines if len(x) == 2 and x[0] == "have"}

    def check_version(self, remote_version: str) -> None:
        """Same edgekit version on both sides: preprocessing, NMS, mAP and timing are the version's."""
        from .. import __version__

        if remote_version != __version__:
            raise TargetError(f"{self.url}: the device runs edgekit {remote_version}, this host {__version__}: "
                              f"install edgekit=={__version__} there (figures of different versions are not "
                              f"comparable)")

    def push(self, bundles: list[Bundle]) -> list[str]:
        """Send each bundle unless the device already holds it; returns their folder names (content keys) there."""
        keys = [b.key() for b in bundles]
        version, have = self.probe(keys)
        self.check_version(version)
        for bundle, key in zip(bundles, keys):
            if key in have:
                continue
            with tempfile.TemporaryFile() as f:
                bundle.write_tar(f)
                f.seek(0)
                script = (f'set -e; d={CACHE}; mkdir -p "$d"; t=$(mktemp -d "$d/.incoming.XXXXXX"); '
                          f'tar -xf - -C "$t"; mv -T "$t" "$d/{key}" 2>/dev/null || {{ rm -rf "$t"; '
                          f'[ -d "$d/{key}" ]; }}')
                proc = self.run(script, stdin=f)
            if proc.returncode != 0:
                raise TargetError(f"{self.url}: could not store the files in the device's cache: "
                                  f"{_last_line(proc.stderr) or f'exit {proc.returncode}'}")
        return keys

    def take(self, name: str) -> bytes:
        """A file the device's edgekit wrote in its cache folder: its bytes, and it is removed there."""
        proc = self.run(f'd={CACHE}; cat "$d/{name}" && rm -f "$d/{name}"')
        if proc.returncode != 0:
            raise TargetError(f"{self.url}: could not read back {name}: {_last_line(proc.stderr)}")
        return proc.stdout

    def edgekit_json(self, command: str, argv: list[str]) -> dict:
        """Run `edgekit -q COMMAND ARGV --json -` in the device's cache folder; its JSON result as a dict."""
        script = (f'd={CACHE}; mkdir -p "$d" && cd "$d" && '
                  f"exec edgekit -q {shlex.join([command, *argv, '--json', '-'])}")
        proc = self.run(script)
        if proc.returncode != 0:
            msg = _last_line(proc.stderr) or f"exit {proc.returncode}"
            msg = re.sub(r"^edgekit \S+: error: ", "", msg)
            raise RemoteCommandError(f"{self.url}: {msg}", proc.returncode if proc.returncode < 128 else 2)
        text = proc.stdout.decode("utf-8", "replace")
        start = 0 if text.startswith("{") else text.find("\n{") + 1  # the JSON, after any login banner
        try:
            return json.loads(text[start:])
        except ValueError:
            raise TargetError(f"{self.url}: the device's `edgekit {command}` sent no JSON result") from None


def _last_line(data: bytes) -> str:
    lines = [x.strip() for x in data.decode("utf-8", "replace").splitlines() if x.strip()]
    return lines[-1] if lines else ""


def artifact_bundle(artifact) -> tuple[Bundle, str]:
    """The artifact with what loads with it (sidecar .json, OpenVINO .bin, or its folder); its path in the bundle."""
    from ..errors import ArtifactError
    from ..outputs import artifact_inputs

    p = Path(artifact)
    if not p.exists():
        raise ArtifactError(f"{artifact}: not found")
    b = Bundle()
    for q in artifact_inputs(p):
        if q.exists():
            b.add(q, q.name)
    return b, p.name


def dataset_bundle(data, split: str, skip_bad: bool = False) -> tuple[Bundle, str, list[str]]:
    """One split of a dataset as a self-contained YOLO folder: its images as they are, its labels as loaded here.

    Only that split goes over; the labels are written from the host's own reading (YOLO or COCO json alike), so the
    device scores against exactly the boxes the host would. Returns the bundle, the split's name in it and the
    samples skipped here (skip_bad).
    """
    import yaml

    from ..data import load_dataset

    from ..data import Dataset

    ds = data if isinstance(data, Dataset) else load_dataset(data, skip_bad=skip_bad)
    samples = ds.samples(split)
    split = split if split in ("train", "val", "test") else "val"  # a COCO file's split is named after the file
    b = Bundle()
    for i, s in enumerate(samples):
        stem = f"{i:06d}_{Path(s.image).stem}"
        b.add(Path(s.image), f"images/{split}/{stem}{Path(s.image).suffix}")
        rows = [f"{int(c)} " + " ".join(repr(float(v)) for v in box) for c, box in zip(s.classes, s.boxes)]
        b.entries[f"labels/{split}/{stem}.txt"] = ("\n".join(rows) + ("\n" if rows else "")).encode()
    spec = {"path": ".", split: f"images/{split}", "names": dict(enumerate(ds.names))}
    b.entries["data.yaml"] = yaml.safe_dump(spec, sort_keys=False).encode()
    return b, split, list(ds.skipped)


def target_for(args) -> SshTarget:
    """The command's --target, refused where a --device was also given that says otherwise."""
    target = parse_target(args.target)
    device = getattr(args, "device", "cpu")
    if device not in ("cpu", target.device):
        raise EdgekitError(f"--device {device} and --target {args.target}: the device is the part after the host "
                           f"(e.g. {target.url.rsplit('/', 1)[0]}/{device})")
    return target


def cli_args(args, names: tuple[str, ...]) -> list[str]:
    """The given argparse destinations as command-line options again (None and False left out; lists comma-joined)."""
    out = []
    for name in names:
        v = getattr(args, name, None)
        if v is None or v is False:
            continue
        flag = "--" + name.replace("_", "-")
        if v is True:
            out.append(flag)
        else:
            out += [flag, ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)]
    return out


def remote_command(target: SshTarget, command: str, artifact, argv: list[str], data=None, split: str = "val",
                   images=None, skip_bad: bool = False) -> dict:
    """Send what `edgekit COMMAND ARTIFACT` reads to the device, run it there on the target's device, return its JSON.

    The result names the host's paths (artifact, data) and `"target": URL`; everything measured (the environment
    record included) is the device's, as it sent it.
    """
    bundles, paths, skipped = [], {}, []
    art, name = artifact_bundle(artifact)
    bundles.append(art)
    if data is not None:
        ds, split, skipped = dataset_bundle(data, split, skip_bad)
        bundles.append(ds)
    if images is not None:
        im = Bundle()
        im.add(Path(images), "images")
        bundles.append(im)
    keys = target.push(bundles)
    paths["artifact"] = f"{keys[0]}/{name}"
    extra = []
    if data is not None:
        extra += ["--data", f"{keys[1]}/data.yaml", "--split", split]
    if images is not None:
        extra += ["--images", f"{keys[-1]}/images"]
    res = target.edgekit_json(command, [paths["artifact"], "--device", target.device, *argv, *extra])
    _host_paths(res, artifact, data, images)
    if skipped:  # samples this host could not read were not sent: they are reported as a local run would
        res["skipped"] = skipped + list(res.get("skipped") or [])
    res["target"] = target.url
    return res


def remote_eval(url: str, artifact, data, argv: list[str], split: str = "val", matches=None,
                skip_bad: bool = False) -> dict:
    """`edgekit eval` on the device; with `matches`, its per-image matches are brought back there (paired tests)."""
    import uuid

    from ..io import atomic_path

    target = parse_target(url)
    name = f".matches-{uuid.uuid4().hex}.npz"
    extra = ["--matches", name] if matches is not None else []
    res = remote_command(target, "eval", artifact, [*argv, *extra], data=data, split=split, skip_bad=skip_bad)
    if matches is not None:
        blob = target.take(name)
        with atomic_path(Path(matches)) as tmp:
            Path(tmp).write_bytes(blob)
        res["matches"] = str(matches)
    return res


def _host_paths(res: dict, artifact, data, images=None) -> None:
    """The device's cache paths in a result -> the host's own (what the user gave)."""
    if isinstance(res.get("artifact"), str):
        res["artifact"] = str(artifact)
    if images is not None and isinstance(res.get("images"), dict):
        res["images"]["source"] = str(images)
    for d in (res, res.get("accuracy")):
        if isinstance(d, dict) and isinstance(d.get("data"), str) and data is not None:
            d["data"] = str(data)
