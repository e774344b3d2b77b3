"""Per-architecture quantization recipes (edgekit/recipes/*.yaml): layers kept in float, fallbacks, backend settings."""
from __future__ import annotations

import os
import re
from importlib import resources
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import EdgekitError

_HEAD = re.compile(r"^/model\.(\d+)/")
_KEYS = {"name", "families", "description", "keep_float", "fallback", "backends"}  # a recipe's top-level keys


def recipes_dir():
    """$EDGEKIT_RECIPES, else the recipes shipped in the package (a Path, or a Traversable for a zipped install)."""
    env = os.environ.get("EDGEKIT_RECIPES")
    return Path(env) if env else resources.files("edgekit") / "recipes"


@dataclass
class Scope:
    """Node names, regular expressions (re.search) and op types; '{head}' stands for the Detect module index."""

    patterns: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    def match(self, nodes: list[tuple[str, str]]) -> list[str]:
        """Names of the (name, op_type) nodes this scope covers, in graph order."""
        head = head_index([n for n, _ in nodes])
        pats = [re.compile(p.replace("{head}", str(head))) for p in self.patterns if head is not None or "{head}" not in p]
        types, names = set(self.types), set(self.names)
        return [n for n, t in nodes if n in names or t in types or any(p.search(n) for p in pats)]

    def __add__(self, other: "Scope") -> "Scope":
        return Scope(self.patterns + other.patterns, self.types + other.types, self.names + other.names)


@dataclass
class Recipe:
    name: str
    keep_float: Scope
    fallback: list[tuple[str, Scope]]
    backends: dict[str, dict] = field(default_factory=dict)  # backend name -> its quantizer's settings
    families: list[str] = field(default_factory=list)
    description: str = ""
    path: Path | None = None

    def backend(self, name: str) -> dict:
        """The recipe's settings for one backend ({} when it has none)."""
        return dict(self.backends.get(name) or {})

    def summary(self) -> dict:
        return {"name": self.name, "path": str(self.path) if self.path else None,
                "keep_float": {"patterns": self.keep_float.patterns, "types": self.keep_float.types},
                "fallback": [n for n, _ in self.fallback]}


def head_index(names: list[str]) -> int | None:
    """The highest N in node names '/model.N/...' (the detection head of an Ultralytics export)."""
    idx = [int(m.group(1)) for n in names if (m := _HEAD.match(n))]
    return max(idx) if idx else None


def _scope(doc, path: Path, where: str) -> Scope:
    if doc is None:
        return Scope()
    if not isinstance(doc, dict):
        raise EdgekitError(f"{path}: '{where}' must be a mapping with patterns/types/names")
    unknown = set(doc) - {"patterns", "types", "names", "name"}
    if unknown:
        raise EdgekitError(f"{path}: '{where}' has unknown keys: {', '.join(sorted(unknown))}")
    out = Scope(list(doc.get("patterns") or []), list(doc.get("types") or []), list(doc.get("names") or []))
    for p in out.patterns:
        try:
            re.compile(p.replace("{head}", "0"))
        except re.error as e:
            raise EdgekitError(f"{path}: '{where}' pattern {p!r} is not a valid regular expression ({e})") from None
    return out


def _known_backends() -> tuple[str, ...]:
    from . import names

    return tuple(names())


def _backends(doc, path: Path) -> dict[str, dict]:
    """The 'backends:' mapping: one mapping of settings per quantize backend."""
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise EdgekitError(f"{path}: 'backends' must be a mapping of backend name to settings")
    for name, cfg in doc.items():
        if name not in _known_backends():
            raise EdgekitError(f"{path}: 'backends' has unknown backend '{name}' "
                               f"(choose from {', '.join(_known_backends())})")
        if cfg is not None and not isinstance(cfg, dict):
            raise EdgekitError(f"{path}: 'backends.{name}' must be a mapping of settings")
    return {str(name): dict(cfg or {}) for name, cfg in doc.items()}


def load_recipe(path) -> Recipe:
    """Read and check one recipe file (a path, or a Traversable from the package)."""
    path = Path(path) if isinstance(path, (str, os.PathLike)) else path
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise EdgekitError(f"{path}: recipe file not found") from None
    except yaml.YAMLError as e:
        raise EdgekitError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(doc, dict) or "name" not in doc:
        raise EdgekitError(f"{path}: a recipe is a mapping with at least 'name' and 'keep_float'")
    unknown = sorted(set(doc) - _KEYS)
    if unknown:
        hint = " (backend settings go under 'backends:')" if set(unknown) & set(_known_backends()) else ""
        raise EdgekitError(f"{path}: unknown key '{unknown[0]}'{hint}; a recipe has {', '.join(sorted(_KEYS))}")
    fallback = []
    for i, st in enumerate(doc.get("fallback") or []):
        if not isinstance(st, dict) or "name" not in st:
            raise EdgekitError(f"{path}: fallback[{i}] needs a 'name' and patterns/types/names")
        fallback.append((str(st["name"]), _scope(st, path, f"fallback[{i}]")))
    return Recipe(name=str(doc["name"]), keep_float=_scope(doc.get("keep_float"), path, "keep_float"),
                  fallback=fallback, backends=_backends(doc.get("backends"), path),
                  families=[str(f) for f in doc.get("families") or []], description=str(doc.get("description", "")),
                  path=path)


def recipe_for(family: str | None, folder=None) -> Recipe:
    """The recipe named after the family, else one listing it in 'families', else default.yaml."""
    folder = Path(folder) if folder else recipes_dir()
    if not folder.is_dir():
        raise EdgekitError(f"{folder}: recipe folder not found (EDGEKIT_RECIPES must name a folder of recipe .yaml files)")
    fam = (family or "").lower()
    if fam and (folder / f"{fam}.yaml").is_file():
        return load_recipe(folder / f"{fam}.yaml")
    for p in sorted((p for p in folder.iterdir() if p.name.endswith(".yaml")), key=lambda p: p.name):
        r = load_recipe(p)
        if fam and fam in [f.lower() for f in r.families]:
            return r
    if not (folder / "default.yaml").is_file():
        raise EdgekitError(f"{folder}: no recipe for family '{family}' and no default.yaml")
    return load_recipe(folder / "default.yaml")
