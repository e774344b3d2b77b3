"""Freeze primitives on named module groups (after timm's freeze/unfreeze and group_matcher).

An Ultralytics detection model is `model.model`, an nn.Sequential built from its yaml: the `backbone` list gives
modules 0..len(backbone)-1, the last module is the Detect head, everything between is the neck.
"""
from __future__ import annotations

import re

from .strategy import GROUPS

ALWAYS_FROZEN = (".dfl",)  # Ultralytics' DFL conv holds a fixed arange, never trained
ADAPTER_KEYS = ("lora_",)  # adapter parameters stay trainable inside frozen modules
_INDEX = re.compile(r"(?:^|\.)model\.(\d+)\.")


def _cfg(model_or_cfg) -> dict:
    if isinstance(model_or_cfg, dict):
        return model_or_cfg
    net = getattr(model_or_cfg, "module", model_or_cfg)  # DDP
    net = getattr(net, "model", net) if not hasattr(net, "yaml") else net
    return getattr(net, "yaml", None) or {}


def module_groups(model_or_cfg) -> dict[str, list[int]]:
    """{'backbone': [0..nb-1], 'neck': [nb..n-2], 'head': [n-1]} from a model or its yaml dict."""
    cfg = _cfg(model_or_cfg)
    if "backbone" not in cfg or "head" not in cfg:
        raise ValueError("model has no yaml with 'backbone' and 'head' lists")
    nb, n = len(cfg["backbone"]), len(cfg["backbone"]) + len(cfg["head"])
    return {"backbone": list(range(nb)), "neck": list(range(nb, n - 1)), "head": [n - 1]}


def group_matcher(model_or_cfg):
    """A function module index -> group name (timm's group_matcher, by index)."""
    owner = {i: g for g, idx in module_groups(model_or_cfg).items() for i in idx}
    return owner.get


def module_index(name: str) -> int | None:
    """'model.12.cv1.conv.weight' -> 12 (also inside 'ema.model.12...' or DDP 'module.model.12...')."""
    m = _INDEX.search(name if name.startswith("model.") else "." + name)
    return int(m.group(1)) if m else None


def frozen_indices(groups: dict[str, list[int]], freeze) -> set[int]:
    """Module indices frozen by a stage target: 'none', a group (with the groups before it), or N first modules."""
    if freeze in (None, "none", 0):
        return set()
    if isinstance(freeze, int):
        return set(range(freeze))
    order = list(GROUPS)
    if freeze not in order:
        raise ValueError(f"unknown group '{freeze}'")
    out = set()
    for g in order[: order.index(freeze) + 1]:
        out.update(groups[g])
    return out


def frozen_group_names(groups: dict[str, list[int]], indices: set[int]) -> list[str]:
    """Names of the groups wholly inside `indices`."""
    return [g for g in GROUPS if groups[g] and set(groups[g]) <= indices]


def _frozen_ids(model, frozen) -> set[int]:
    """ids of the parameters inside `frozen`: module indices of an Ultralytics model, or modules of any model."""
    frozen = list(frozen)
    if all(isinstance(i, int) for i in frozen):
        idx = set(frozen)
        return {id(p) for name, p in model.named_parameters() if module_index(name) in idx}
    return {id(p) for m in frozen for p in m.parameters()}


def set_frozen(model, frozen, keep=ADAPTER_KEYS) -> int:
    """Freeze the parameters of `frozen` (module indices, or modules) and DFL, unfreeze the rest; returns trainable.

    Adapter parameters (`keep`, e.g. LoRA) stay trainable inside frozen modules.
    """
    ids = _frozen_ids(model, frozen)
    n = 0
    for name, p in model.named_parameters():
        off = any(k in name for k in ALWAYS_FROZEN) or (id(p) in ids and not any(k in name for k in keep))
        p.requires_grad_(not off and p.dtype.is_floating_point)
        if p.requires_grad:
            n += p.numel()
        else:
            p.grad = None
    return n


def freeze(model, groups, names=("backbone",)) -> int:
    """Freeze the named groups and make every other group trainable; returns the trainable count."""
    idx = set().union(*(groups[g] for g in names)) if names else set()
    return set_frozen(model, idx)


def unfreeze(model) -> int:
    """Make everything trainable (except DFL)."""
    return set_frozen(model, set())


def batchnorms_in(model, frozen) -> list:
    """BatchNorm modules inside `frozen` (module indices of an Ultralytics model, or modules)."""
    import torch.nn as nn

    frozen = list(frozen)
    if not all(isinstance(i, int) for i in frozen):
        return [b for m in frozen for b in m.modules() if isinstance(b, nn.modules.batchnorm._BatchNorm)]
    indices = set(frozen)
    return [m for name, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and module_index(name + ".") in indices]


def freeze_bn(model, frozen) -> int:
    """Put BatchNorm layers of frozen modules in eval mode so their running statistics are kept."""
    bns = batchnorms_in(model, frozen)
    for m in bns:
        m.eval()
    return len(bns)


def count_trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
