"""Loading .pt checkpoints without running code from them, unless the user vouches for the file.

A checkpoint is a pickle, and unpickling can call any importable function. Before anything unpickles a .pt, edgekit
reads its pickle opcodes without executing them and checks every global it names against an allow-list:

- callables (what REDUCE may call): torch's own weights_only set (tensor/storage rebuilders, dtypes, Size, device,
  OrderedDict, set) plus a few plain-data constructors (numpy scalars and dtypes, pathlib paths, Ultralytics'
  IterableSimpleNamespace);
- classes (what NEWOBJ may create, i.e. `cls.__new__(cls)` and then `__setstate__`/`__dict__` update): types only,
  under torch.nn.modules / ultralytics.nn (nn.Module subclasses), Ultralytics' loss/assigner modules, edgekit's own
  LoRA layer. A class is never allowed as a callable: calling ultralytics' DetectionModel with a dict would eval its
  `activation` string, so a pickle that REDUCEs (calls) a class, or puts one anywhere but the NEWOBJ slot, is refused.

Then the file is loaded with torch.load(weights_only=True) and only those globals (two independent checks), and the
model's architecture yaml, which Ultralytics' trainer rebuilds with eval(), is checked to name only plain layers
(torch.nn and ultralytics.nn.modules classes), arguments that are literals, and a literal `nn.Act()` activation.
Anything else raises UnsafeCheckpoint naming the file and the global, with the opt-in: --trust-checkpoint on the
command line, trust_checkpoint=True in Python. torch is imported lazily.

An architecture yaml given by path (`edgekit train my.yaml`, `train-export --models my.yaml`) gets the same yaml check
through `checked_copy`, always: no real model needs more, so there is no opt-in for it.
"""
from __future__ import annotations

import io
import shutil
import threading
import zipfile
from pathlib import Path

from .errors import ArtifactError

OPT_IN = "if you trust this file, pass --trust-checkpoint (CLI) or trust_checkpoint=True (Python)"

# Plain-data constructors seen in real Ultralytics / super-gradients checkpoints (train_metrics, train_args, paths).
_CALLABLES = {
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.dtype",
    "pathlib.PosixPath", "pathlib.WindowsPath", "pathlib._local.PosixPath", "pathlib._local.WindowsPath",
    "ultralytics.utils.IterableSimpleNamespace", "ultralytics.yolo.utils.IterableSimpleNamespace",
}
# Module prefixes whose nn.Module subclasses may be created (never called).
_MODULE_PREFIXES = ("torch.nn.modules.", "ultralytics.nn.modules.", "ultralytics.nn.tasks", "edgekit.train.lora")
# Modules whose own plain classes may be created too (losses and assigners pickled with a trained model).
_PLAIN_CLASS_MODULES = ("ultralytics.utils.loss", "ultralytics.utils.tal", "ultralytics.models.utils.loss",
                        "ultralytics.models.utils.ops")
# Old or moved names Ultralytics itself maps (see ultralytics.nn.tasks.torch_safe_load).
_ALIASES = {"ultralytics.nn.modules.block.Silence": "torch.nn.modules.linear.Identity",
            "ultralytics.nn.tasks.YOLOv10DetectionModel": "ultralytics.nn.tasks.DetectionModel",
            "ultralytics.utils.loss.v10DetectLoss": "ultralytics.utils.loss.E2EDetectLoss",
            "ultralytics.yolo.utils.IterableSimpleNamespace": "ultralytics.utils.IterableSimpleNamespace"}

_lock = threading.Lock()  # torch's safe_globals() edits a process-wide list


class UnsafeCheckpoint(ArtifactError):
    """A checkpoint names a global outside the allow-list: loading it could run code."""


def _refuse(path, what: str):
    raise UnsafeCheckpoint(f"{path}: refused to load: {what} (loading it could run code); {OPT_IN}")


def _torch_safe() -> set[str]:
    """Globals torch's weights_only unpickler allows by default."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        return set(_get_allowed_globals())
    except ImportError:  # private helper moved: keep the few a checkpoint needs
        return {"collections.OrderedDict", "builtins.set", "torch.Size", "torch._utils._rebuild_tensor_v2",
                "torch._utils._rebuild_parameter", "torch.FloatStorage", "torch.HalfStorage", "torch.LongStorage"}


# --- static scan of the pickle opcodes ------------------------------------------------------------------------------

class _Global(str):
    """A global pushed on the simulated stack."""


def _canon(module: str, name: str) -> str:
    import _compat_pickle

    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}"


def pickle_globals(data: bytes, path="checkpoint") -> dict[str, set[str]]:
    """{global: {uses}} of one pickle, uses among 'call', 'new', 'persid', 'value'; executes nothing."""
    import pickletools

    stack: list = []
    marks: list[int] = []
    memo: dict = {}
    uses: dict[str, set[str]] = {}

    def use(item, how):
        if isinstance(item, _Global):
            uses.setdefault(str(item), set()).add(how)
        elif isinstance(item, tuple):
            for x in item:
                use(x, how)

    def pop_mark():
        k = marks.pop()
        items = stack[k:]
        del stack[k:]
        return items

    try:
        for op, arg, _ in pickletools.genops(data):
            n = op.name
            if n in ("GLOBAL", "INST"):
                g = _Global(_canon(*arg.split(" ", 1)))
                if n == "GLOBAL":
                    stack.append(g)
                else:
                    use(g, "call")
                    use(tuple(pop_mark()), "value")
                    stack.append(None)
            elif n == "STACK_GLOBAL":
                name, module = stack.pop(), stack.pop()
                if not all(isinstance(x, str) and not isinstance(x, _Global) for x in (name, module)):
                    _refuse(path, "a global whose name is computed (STACK_GLOBAL of non-literal strings)")
                stack.append(_Global(_canon(module, name)))
            elif n.endswith(("UNICODE", "STRING", "UNICODE8")) and isinstance(arg, str):
                stack.append(arg)
            elif n == "MARK":
                marks.append(len(stack))
            elif n in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = stack[-1]
            elif n == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif n in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo[arg])
            elif n == "TUPLE":
                stack.append(tuple(pop_mark()))
            elif n in ("TUPLE1", "TUPLE2", "TUPLE3"):
                k = int(n[-1])
                items = tuple(stack[-k:])
                del stack[-k:]
                stack.append(items)
            elif n == "EMPTY_TUPLE":
                stack.append(())
            elif n == "BINPERSID":
                use(stack.pop(), "persid")
                stack.append(None)
            elif n == "REDUCE":
                args, fn = stack.pop(), stack.pop()
                use(fn, "call") if isinstance(fn, _Global) else _refuse(path, "a call of a computed object (REDUCE)")
                use(args, "value")
                stack.append(None)
            elif n in ("NEWOBJ", "NEWOBJ_EX"):
                kwargs = stack.pop() if n == "NEWOBJ_EX" else ()
                args, cls = stack.pop(), stack.pop()
                use(cls, "new") if isinstance(cls, _Global) else _refuse(path, f"an object of a computed class ({n})")
                use((args, kwargs), "value")
                stack.append(None)
            elif n == "OBJ":
                items = pop_mark()
                use(items[0] if items else None, "call")
                use(tuple(items[1:]), "value")
                stack.append(None)
            elif n in ("EXT1", "EXT2", "EXT4"):
                _refuse(path, f"copyreg extension code {arg} ({n})")
            elif n == "POP":
                stack.pop()
            elif n == "POP_MARK":
                pop_mark()
            elif n == "DUP":
                stack.append(stack[-1])
            elif n == "STOP":
                break
            else:  # generic: consume what the opcode documents, push placeholders
                before = list(op.stack_before)
                if pickletools.markobject in before:
                    use(tuple(pop_mark()), "value")
                    before = before[:before.index(pickletools.markobject)]
                for _ in before:
                    use(stack.pop(), "value")
                stack.extend([None] * len([s for s in op.stack_after if s is not pickletools.markobject]))
                if pickletools.markobject in op.stack_after:
                    marks.append(len(stack))
    except (ValueError, IndexError, KeyError) as e:
        raise ArtifactError(f"{path}: not a loadable Ultralytics checkpoint (pickle: {type(e).__name__}: {e})"
                            ) from None
    return uses


def _import(module: str):
    """Import an allow-listed module; Ultralytics through edgekit's offline, settings-in-temp setup."""
    import importlib

    if module.startswith("ultralytics"):
        from ._ultralytics import ultralytics

        ultralytics()
    return importlib.import_module(module)


def _resolve_class(name: str):
    """The class `name` if it may be created (never called), else None; imports only allow-listed modules."""
    name = _ALIASES.get(name, name)
    module, _, attr = name.rpartition(".")
    plain = module in _PLAIN_CLASS_MODULES
    if not (plain or name.startswith(_MODULE_PREFIXES)):
        return None
    try:
        obj = getattr(_import(module), attr, None)
    except ImportError:
        return None
    if not isinstance(obj, type):
        return None
    if plain:
        return obj if obj.__module__ == module else None
    import torch

    return obj if issubclass(obj, torch.nn.Module) else None


def _resolve_callable(name: str):
    name = _ALIASES.get(name, name)
    module, _, attr = name.rpartition(".")
    try:
        return getattr(_import(module), attr)
    except (ImportError, AttributeError):
        return None


def check_globals(path, uses: dict[str, set[str]]) -> list:
    """Refuse any global outside the allow-list; returns the (object, name) pairs weights_only needs."""
    safe = _torch_safe()
    extra = []
    for name in sorted(uses):
        how = uses[name]
        if name in safe:
            continue
        if name in _CALLABLES:
            obj = _resolve_callable(name)
            if obj is None:
                _refuse(path, f"global {name} is not importable here")
            extra.append((obj, name))
            continue
        if "call" in how:
            _refuse(path, f"global {name} is called while unpickling and is not an allow-listed constructor")
        if how - {"new"}:
            _refuse(path, f"global {name} appears as a value, where only tensors and plain data are allowed")
        if _resolve_class(name) is None:
            _refuse(path, f"global {name} is not an allow-listed model class")
        extra.append((_resolve_class(name), name))
    if any(n.startswith(("numpy.", )) for n in uses):
        import numpy as np

        extra.append(type(np.dtype(np.float64)))  # numpy builds dtype classes dynamically
    return extra


def _pickles(f, shown) -> list[bytes]:
    """The data.pkl of a zip-format torch checkpoint (the only pickle torch.load runs in that format)."""
    try:
        with zipfile.ZipFile(f) as z:
            names = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if len(names) != 1:
                raise ArtifactError(f"{shown}: not a PyTorch checkpoint (expected one data.pkl, found {len(names)})")
            return [z.read(names[0])]
    except zipfile.BadZipFile:
        f.seek(0)
        head = f.read(2)
        if head == b"PK":
            raise ArtifactError(f"{shown}: not a loadable Ultralytics checkpoint (damaged or truncated zip archive)")
        if head[:1] != b"\x80":
            raise ArtifactError(f"{shown}: not a loadable Ultralytics checkpoint (neither a torch zip archive nor a "
                                f"pickle)") from None
        return []  # legacy (pre-1.6) format: torch's weights_only unpickler alone, with its default globals


# --- architecture yaml (a .pt's model.yaml, or a yaml file given by path) -------------------------------------------
# What Ultralytics' parse_model (ultralytics/nn/tasks.py) does with a model yaml: eval() of `activation`; each row's
# module name looked up as getattr(torch.nn, 'nn.X'), getattr(torchvision.ops, 'torchvision.ops.X') or
# globals()[name] of ultralytics.nn.tasks (which also holds functions and whole models that load files) and called;
# each top-level string argument looked up among parse_model's local variables, else ast.literal_eval()ed.

# Ultralytics layers that fetch something when built: TorchVision downloads torchvision weights
_FETCHING_LAYERS = {"TorchVision"}
# parse_model locals that Ultralytics' own yamls name as arguments
_YAML_VARIABLES = {"nc", "kpt_shape"}


class UnsafeModelYaml(ArtifactError):
    """A model yaml that Ultralytics would turn into code (refused; no opt-in)."""


def _yaml_refuse(path, what: str, names_code: bool = True):
    """names_code False: a layer name that Ultralytics would not find at all (a broken yaml, not a dangerous one)."""
    e = UnsafeModelYaml(f"{path}: {what}")
    e.what, e.names_code = what, names_code
    raise e


def _check_activation(path, act) -> None:
    import ast

    import torch

    try:
        call = ast.parse(str(act).strip(), mode="eval").body
        parts, node = [], call.func
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        parts.append(node.id)
        cls = getattr(torch.nn, parts[0], None)
        for a in [*call.args, *(k.value for k in call.keywords)]:
            ast.literal_eval(a)
        ok = parts[1:] in (["nn"], ["nn", "torch"]) and isinstance(cls, type) and issubclass(cls, torch.nn.Module)
    except (SyntaxError, ValueError, AttributeError, TypeError):
        ok = False
    if not ok:
        _yaml_refuse(path, f"model yaml activation {str(act)[:60]!r} would be eval()ed by Ultralytics "
                           f"(only nn.Class(literal args) is allowed)")


def _layer(m):
    """The class parse_model would build for the name `m`, if it is a plain layer; else None."""
    import torch

    if m == "Silence":  # YOLOv9's; DetectionModel maps it to nn.Identity before parse_model
        obj = torch.nn.Identity
    elif m.startswith("nn."):
        obj = getattr(torch.nn, m[3:], None)
    elif m.startswith("torchvision.ops."):
        try:
            obj = getattr(_import("torchvision.ops"), m[16:], None)
        except ImportError:
            return None
    else:
        obj = vars(_import("ultralytics.nn.tasks")).get(m)
        if not (isinstance(obj, type) and obj.__module__.startswith("ultralytics.nn.modules")) or m in _FETCHING_LAYERS:
            return None  # model classes (DetectionModel loads a yaml or weights from its argument), functions
    return obj if isinstance(obj, type) and issubclass(obj, torch.nn.Module) else None


def _check_layer(path, m, where: str = "") -> None:
    if not isinstance(m, str) or _layer(m) is None:
        _yaml_refuse(path, f"model yaml layer {str(m)[:60]!r} is not a torch or Ultralytics nn.Module layer "
                           f"({where}: Ultralytics looks the name up and calls it)", names_code=_exists(m))


def _exists(m) -> bool:
    """Whether parse_model would find something under the name `m` (whatever it is)."""
    import torch

    if not isinstance(m, str):
        return True
    if m.startswith("nn."):
        return hasattr(torch.nn, m[3:])
    if m.startswith("torchvision.ops."):
        try:
            return hasattr(_import("torchvision.ops"), m[16:])
        except ImportError:
            return False
    return m in vars(_import("ultralytics.nn.tasks"))


def _check_args(path, args, where: str) -> None:
    if not isinstance(args, (list, tuple)):
        _yaml_refuse(path, f"model yaml {where}: arguments {str(args)[:60]} are not a list")
    variables = set(_import("ultralytics.nn.tasks").parse_model.__code__.co_varnames)
    for a in args:
        if isinstance(a, str) and a in variables - _YAML_VARIABLES:
            _yaml_refuse(path, f"model yaml {where}: argument {a!r} names a variable of Ultralytics' model parser "
                               f"(only {', '.join(sorted(_YAML_VARIABLES))} may be named)")


def check_model_dict(path, cfg) -> None:
    """Refuse a model yaml dict that Ultralytics' parse_model would turn into code (UnsafeModelYaml naming the key)."""
    if not isinstance(cfg, dict):
        _yaml_refuse(path, "not a model yaml (expected a mapping with backbone and head)")
    if cfg.get("activation"):
        _check_activation(path, cfg["activation"])
    for section in ("backbone", "head"):
        rows = cfg.get(section) or []
        if not isinstance(rows, (list, tuple)):
            _yaml_refuse(path, f"model yaml {section}: expected a list of [from, repeats, module, args] rows")
        for i, row in enumerate(rows):
            where = f"{section}[{i}]"
            if not (isinstance(row, (list, tuple)) and len(row) == 4):
                _yaml_refuse(path, f"model yaml row {str(row)[:60]} is not [from, repeats, module, args] ({where})")
            _check_layer(path, row[2], where)
            _check_args(path, row[3], where)


def check_model_yaml(path, ckpt) -> None:
    """Refuse a checkpoint whose architecture yaml Ultralytics would turn into code when it rebuilds the model."""
    nets = [ckpt.get(k) for k in ("ema", "model")] if isinstance(ckpt, dict) else [ckpt]
    for net in nets:
        cfg = getattr(net, "yaml", None)
        if not isinstance(cfg, dict):
            continue
        try:
            check_model_dict(path, cfg)
        except UnsafeModelYaml as e:
            _refuse(path, e.what)


def check_arch_yaml(path, shown=None) -> dict:
    """Read an architecture yaml as Ultralytics reads it and refuse what it would turn into code; returns the dict."""
    shown = shown or path
    try:
        cfg = _import("ultralytics.utils").YAML.load(path)
    except (ValueError, OSError, AssertionError) as e:
        raise ArtifactError(f"{shown}: not a readable model yaml ({str(e).splitlines()[0] if str(e) else e})") from None
    check_model_dict(shown, cfg)
    return cfg


# --- public ----------------------------------------------------------------------------------------------------------

def load_checkpoint(path, trust: bool = False, map_location="cpu", shown=None):
    """torch.load a .pt: restricted (allow-listed globals, weights_only) unless `trust`; raises UnsafeCheckpoint.

    shown: the name errors give the file (the user's path when `path` is edgekit's private copy of it).
    """
    import torch

    path = Path(path)
    shown = shown or path
    if not path.is_file():
        raise ArtifactError(f"{shown}: checkpoint file not found")
    if trust:  # the user vouched for this file (--trust-checkpoint): full unpickling, only on that opt-in
        return torch.load(str(path), map_location=map_location, weights_only=not trust)
    blob = path.read_bytes()  # scan and load the same bytes, whatever happens to the file meanwhile
    extra = []
    for data in _pickles(io.BytesIO(blob), shown):
        extra += check_globals(shown, pickle_globals(data, shown))
    try:
        with _lock, torch.serialization.safe_globals(extra):
            ckpt = torch.load(io.BytesIO(blob), map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError ... for a bad file
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
        refused = [ln for ln in lines if "GLOBAL" in ln or "global" in ln or "unrecognized function" in ln
                   or "allowlisted" in ln]
        if refused:  # torch's own check (legacy-format files only reach it without ours)
            raise UnsafeCheckpoint(f"{shown}: refused to load: {refused[0][:200]}; {OPT_IN}") from None
        why = next((ln for ln in lines if ln.startswith("WeightsUnpickler error")), lines[0])
        raise ArtifactError(f"{shown}: not a loadable Ultralytics checkpoint ({type(e).__name__}: {why[:200]})"
                            ) from None
    check_model_yaml(shown, ckpt)
    return ckpt


def check_checkpoint(path, trust: bool = False, shown=None) -> None:
    """Raise UnsafeCheckpoint unless `path` loads with the allow-list (or `trust` is set)."""
    if not trust:
        load_checkpoint(path, shown=shown)


def checked_copy(path, folder, trust: bool = False, name: str | None = None) -> Path:
    """Copy `path` into `folder` (edgekit's private temp dir) and check the copy: what later loads is what was checked.

    A .yaml/.yml is an architecture yaml, always checked (check_arch_yaml); anything else a checkpoint, checked with
    the restricted unpickler unless `trust`. name: the copy's file name (default: the original's).
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: {'model yaml' if _is_yaml(path) else 'checkpoint'} file not found")
    local = Path(folder) / (name or path.name)
    shutil.copyfile(path, local)
    if _is_yaml(local):
        check_arch_yaml(local, shown=path)
    elif not trust:
        check_checkpoint(local, shown=path)
    return local


def _is_yaml(path: Path) -> bool:
    return path.suffix.lower() in (".yaml", ".yml")
