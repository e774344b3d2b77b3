"""The documented JSON Schema of `edgekit bench --json` (schema.json) and a validator for it.

`validate` uses the jsonschema package where it is installed; `check` is a small validator of the keywords
schema.json uses (type, enum, required, properties, additionalProperties, items, minItems, maxItems, minimum,
oneOf, dependentRequired, $ref into $defs), so the schema is checked without that package too.
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


@lru_cache(maxsize=1)
def load_schema() -> dict:
    return json.loads(resources.files("edgekit.bench").joinpath("schema.json").read_text())


def _is(value, t: str) -> bool:
    if t == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[t])


def _resolve(node: dict, root: dict) -> dict:
    while "$ref" in node:
        node = root["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def check(doc, node: dict | None = None, root: dict | None = None, where: str = "$") -> list[str]:
    """Errors of `doc` against the schema (or a part of it), as 'path: problem'; [] when it conforms."""
    root = root or load_schema()
    node = _resolve(root if node is None else node, root)
    if "oneOf" in node:
        ok = [b for b in node["oneOf"] if not check(doc, b, root, where)]
        return [] if len(ok) == 1 else [f"{where}: matches {len(ok)} of the oneOf branches, not exactly one"]
    types = node.get("type")
    if types is not None and not any(_is(doc, t) for t in ([types] if isinstance(types, str) else types)):
        return [f"{where}: expected {types}, got {type(doc).__name__}"]
    errs = []
    if "enum" in node and doc not in node["enum"]:
        errs.append(f"{where}: {doc!r} not one of {node['enum']}")
    if "minimum" in node and _is(doc, "number") and doc < node["minimum"]:
        errs.append(f"{where}: {doc} < minimum {node['minimum']}")
    if isinstance(doc, dict):
        errs += [f"{where}: missing '{k}'" for k in node.get("required", []) if k not in doc]
        for k, deps in node.get("dependentRequired", {}).items():
            errs += [f"{where}: '{k}' needs '{d}'" for d in deps if k in doc and d not in doc]
        props, extra = node.get("properties", {}), node.get("additionalProperties")
        for k, v in doc.items():
            sub = props.get(k, extra if isinstance(extra, dict) else None)
            if sub is not None:
                errs += check(v, sub, root, f"{where}.{k}")
    if isinstance(doc, list):
        if len(doc) < node.get("minItems", 0) or len(doc) > node.get("maxItems", len(doc)):
            errs.append(f"{where}: {len(doc)} items outside [{node.get('minItems', 0)}, {node.get('maxItems')}]")
        if "items" in node:
            for i, v in enumerate(doc):
                errs += check(v, node["items"], root, f"{where}[{i}]")
    return errs


def validate(doc) -> list[str]:
    """Errors of a bench result against schema.json: jsonschema's where installed, else `check`'s."""
    try:
        import jsonschema
    except ImportError:
        return check(doc)
    v = jsonschema.Draft202012Validator(load_schema())
    return [f"${''.join(f'[{p}]' if isinstance(p, int) else f'.{p}' for p in e.absolute_path)}: {e.message}"
            for e in v.iter_errors(doc)]
