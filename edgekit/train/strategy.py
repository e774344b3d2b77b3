"""Fine-tuning strategies as data: which module groups are frozen from which epoch on.

Syntax (`edgekit train --strategy`):
    scratch            random init from the architecture yaml, everything trainable
    full               pretrained weights, everything trainable
    head               backbone and neck frozen (feature extraction); only the Detect head trains
    freeze:N           the first N modules (model.0 .. model.N-1) frozen
    schedule:E:G,...   staged unfreezing: from epoch E (0-based) group G and every group before it is frozen;
                       G is backbone | neck | none | N (first N modules), e.g. "0:neck,3:backbone,6:none"
    schedule           the default schedule: backbone frozen for the first third of the run, then everything
                       trains: "0:backbone,K:none" with K = round(epochs / 3), at least 1 (resolved at train time
                       against --epochs; with 1 epoch the backbone stays frozen throughout)
    lora[:R[:ALPHA]]   backbone frozen, low-rank adapters (rank R, default 8; scale ALPHA/R, ALPHA default R)
                       on its convolutions, merged into the conv weights before best.pt is written
    auto               chosen from the dataset (see edgekit.train.auto), reasons go into train.json
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import EdgekitError

GROUPS = ("backbone", "neck", "head")
KINDS = ("scratch", "full", "head", "freeze", "schedule", "lora", "auto")


@dataclass(frozen=True)
class Stage:
    """From `epoch` on, freeze `freeze`: a group name (it and the groups before it), 'none', or the first N modules."""

    epoch: int
    freeze: str | int = "none"

    def __str__(self):
        return f"{self.epoch}:{self.freeze}"


@dataclass(frozen=True)
class Strategy:
    kind: str
    stages: tuple[Stage, ...] = (Stage(0, "none"),)
    pretrained: bool = True
    lora_rank: int = 0
    lora_alpha: float = 0.0
    text: str = field(default="", compare=False)

    @property
    def spec(self) -> str:
        """Canonical text, parseable again."""
        if self.kind == "freeze":
            return f"freeze:{self.stages[0].freeze}"
        if self.kind == "schedule" and not self.stages:
            return "schedule"
        if self.kind == "schedule":
            return "schedule:" + ",".join(map(str, self.stages))
        if self.kind == "lora":
            return f"lora:{self.lora_rank}" + (f":{self.lora_alpha:g}" if self.lora_alpha != self.lora_rank else "")
        return self.kind

    def resolve(self, epochs: int) -> "Strategy":
        """This strategy for a run of `epochs`: the bare 'schedule' becomes 0:backbone,K:none, the rest is as is."""
        if self.kind != "schedule" or self.stages:
            return self
        k = default_unfreeze_epoch(epochs)
        return Strategy("schedule", (Stage(0, "backbone"), Stage(k, "none")), text=self.text)

    def stage_at(self, epoch: int) -> Stage:
        """The stage in force at a 0-based epoch (before the first stage: nothing frozen)."""
        if self.kind == "schedule" and not self.stages:
            raise EdgekitError("strategy 'schedule': the default schedule depends on the epoch count; "
                               "call resolve(epochs) first")
        cur = Stage(0, "none")
        for s in self.stages:
            if s.epoch <= epoch:
                cur = s
        return cur

    def __str__(self):
        return self.spec


def default_unfreeze_epoch(epochs: int) -> int:
    """Epoch at which the bare 'schedule' unfreezes the backbone: a third of the run, rounded, at least 1."""
    return max(1, round(int(epochs) / 3))


def _bad(text: str, why: str, hint: bool = False) -> EdgekitError:
    more = (" (expected scratch, full, head, freeze:N, schedule[:\"0:backbone,5:none\"], lora[:R[:ALPHA]] or auto)"
            if hint else "")
    return EdgekitError(f"strategy '{text}': {why}{more}")


def _freeze_target(text: str, tok: str) -> str | int:
    tok = tok.strip().lower()
    if tok in ("none", "backbone", "neck"):
        return tok
    if tok == "head":
        raise _bad(text, "freezing 'head' freezes every group and leaves nothing to train")
    try:
        n = int(tok)
    except ValueError:
        raise _bad(text, f"unknown group '{tok}' (groups: backbone, neck, none, or a module count N)") from None
    if n < 0:
        raise _bad(text, f"module count {n} is negative")
    return n if n else "none"


def parse_strategy(text) -> Strategy:
    """Parse a strategy string; EdgekitError with the reason on bad syntax."""
    if isinstance(text, Strategy):
        return text
    raw = str(text).strip()
    s = raw.strip("\"'")
    kind, colon, arg = s.partition(":")
    kind, arg = kind.strip().lower(), arg.strip().strip("\"'")
    if kind not in KINDS:
        raise _bad(raw, f"unknown strategy '{kind}'", hint=True)
    if kind in ("scratch", "full", "head", "auto"):
        if arg:
            raise _bad(raw, f"'{kind}' takes no argument")
        stages = {"head": (Stage(0, "neck"),)}.get(kind, (Stage(0, "none"),))
        return Strategy(kind, stages, pretrained=kind != "scratch", text=raw)
    if kind == "freeze":
        if not arg:
            raise _bad(raw, "'freeze' needs a module count, e.g. freeze:10")
        target = _freeze_target(raw, arg)
        return Strategy(kind, (Stage(0, target),), text=raw)
    if kind == "lora":
        parts = [p for p in arg.split(":")] if arg else []
        if len(parts) > 2:
            raise _bad(raw, "expected lora, lora:R or lora:R:ALPHA")
        try:
            r = int(parts[0]) if parts else 8
            alpha = float(parts[1]) if len(parts) > 1 else float(r)
        except ValueError:
            raise _bad(raw, "LoRA rank must be an integer and alpha a number") from None
        if r < 1 or alpha <= 0:
            raise _bad(raw, "LoRA rank must be >= 1 and alpha > 0")
        return Strategy(kind, (Stage(0, "backbone"),), lora_rank=r, lora_alpha=alpha, text=raw)
    # schedule
    if not colon:
        return Strategy(kind, (), text=raw)  # the default schedule, resolved against the epoch count
    if not arg:
        raise _bad(raw, "'schedule' needs stages, e.g. schedule:\"0:backbone,5:none\"")
    stages = []
    for item in arg.split(","):
        item = item.strip()
        if not item:
            continue
        e, sep, g = item.partition(":")
        if not sep:
            raise _bad(raw, f"stage '{item}' is not EPOCH:GROUP")
        try:
            epoch = int(e)
        except ValueError:
            raise _bad(raw, f"stage '{item}': epoch '{e}' is not an integer") from None
        if epoch < 0:
            raise _bad(raw, f"stage '{item}': epoch must be >= 0")
        if stages and epoch <= stages[-1].epoch:
            raise _bad(raw, f"stage '{item}': epochs must increase (after epoch {stages[-1].epoch})")
        stages.append(Stage(epoch, _freeze_target(raw, g)))
    if not stages:
        raise _bad(raw, "no stages given")
    return Strategy(kind, tuple(stages), text=raw)
