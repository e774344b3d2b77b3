"""LoRA for convolutions: a frozen base Conv2d plus a trainable low-rank path, merged back into one Conv2d.

y = base(x) + (alpha / r) * lora_up(lora_down(x)); lora_down has the base's kernel, stride, padding and dilation
with r output channels, lora_up is 1x1 from r channels, zero-initialised so training starts from the base model.
Merging folds the product into the base weight, so the exported graph is exactly the plain model's.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn


class LoRAConv2d(nn.Module):
    """A Conv2d with a low-rank trainable update (groups=1 convolutions only)."""

    def __init__(self, base: nn.Conv2d, r: int = 8, alpha: float | None = None):
        super().__init__()
        if base.groups != 1:
            raise ValueError("LoRAConv2d supports groups=1 convolutions only")
        self.base, self.r = base, int(r)
        self.scale = float(alpha if alpha is not None else r) / self.r
        self.lora_down = nn.Conv2d(base.in_channels, self.r, base.kernel_size, base.stride, base.padding,
                                   base.dilation, bias=False, padding_mode=base.padding_mode)
        self.lora_up = nn.Conv2d(self.r, base.out_channels, 1, bias=False)
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)
        self.to(base.weight.device, base.weight.dtype)

    def forward(self, x):
        return self.base(x) + self.scale * self.lora_up(self.lora_down(x))

    def delta_weight(self) -> torch.Tensor:
        up = self.lora_up.weight.flatten(1).float()  # (out, r)
        down = self.lora_down.weight.float()  # (r, in, kh, kw)
        return self.scale * torch.einsum("or,rikl->oikl", up, down)

    @torch.no_grad()
    def merged(self) -> nn.Conv2d:
        """A plain Conv2d computing the same function."""
        b = self.base
        conv = nn.Conv2d(b.in_channels, b.out_channels, b.kernel_size, b.stride, b.padding, b.dilation, b.groups,
                         b.bias is not None, b.padding_mode).to(b.weight.device, b.weight.dtype)
        conv.weight.copy_((b.weight.float() + self.delta_weight()).to(b.weight.dtype))
        if b.bias is not None:
            conv.bias.copy_(b.bias)
        conv.weight.requires_grad_(b.weight.requires_grad)
        return conv


def _children(model, indices):
    from .freeze import module_index

    for name, mod in list(model.named_modules()):
        i = module_index(name + ".")
        if indices is not None and i not in indices:
            continue
        for cname, child in list(mod.named_children()):
            yield mod, cname, child


def apply_lora(model, indices=None, r: int = 8, alpha: float | None = None) -> int:
    """Wrap every groups=1 Conv2d inside modules `indices` (None: all) with LoRAConv2d; returns how many."""
    n = 0
    for parent, cname, child in _children(model, set(indices) if indices is not None else None):
        if type(child) is nn.Conv2d and child.groups == 1 and not isinstance(parent, LoRAConv2d):
            setattr(parent, cname, LoRAConv2d(child, r, alpha))
            n += 1
    return n


def merge_lora(model) -> int:
    """Replace every LoRAConv2d by its merged Conv2d, in place; returns how many."""
    n = 0
    for parent, cname, child in _children(model, None):
        if isinstance(child, LoRAConv2d):
            setattr(parent, cname, child.merged())
            n += 1
    return n


def has_lora(model) -> bool:
    return any(isinstance(m, LoRAConv2d) for m in model.modules())


def merge_checkpoint(path, trust_checkpoint: bool = False) -> int:
    """Merge the LoRA adapters of an Ultralytics checkpoint's model/ema in place (atomic rewrite)."""
    from ..checkpoint import load_checkpoint
    from ..io import atomic_path

    ckpt = load_checkpoint(path, trust=trust_checkpoint)
    n = 0
    for key in ("ema", "model"):
        m = ckpt.get(key)
        if isinstance(m, nn.Module) and has_lora(m):
            dtype = next(m.parameters()).dtype
            m = m.float()
            n = merge_lora(m)
            ckpt[key] = m.to(dtype)
    if n:
        with atomic_path(path) as tmp:
            torch.save(ckpt, tmp)
    return n
