"""Successive halving over epochs: rungs and who survives one, within each model x imgsz group.

Our own few lines rather than Optuna's SuccessiveHalvingPruner: that pruner ranks a trial against every trial of its
study at the same rung (one study per group would be needed to keep every speed class), decides asynchronously per
reported value, and brings a storage and ask/tell loop; here the rungs are synchronous and the rule is "keep the best
1/eta of each group", which is the whole bookkeeping below and adds no dependency.
"""
from __future__ import annotations

import math

ETA = 3


def rungs(epochs: int, eta: int = ETA) -> list[int]:
    """Epoch budgets of the rungs ending at `epochs`: 9 -> [1, 3, 9], 3 -> [1, 3], 10 -> [1, 3, 10], 1 -> [1]."""
    out = [int(epochs)]
    while out[0] > 1:
        nxt = max(out[0] // eta, 1)
        if nxt == out[0]:
            break
        out.insert(0, nxt)
    return out


def survivors(scores: dict, groups: dict, eta: int = ETA) -> tuple[list, list]:
    """(kept, pruned) trial keys: the best ceil(n/eta) by score within each group (at least one per group).

    scores: key -> mAP at this rung (None counts as worst); groups: key -> group. Ties keep the earlier key.
    """
    by_group: dict = {}
    for k in scores:
        by_group.setdefault(groups[k], []).append(k)
    kept = set()
    for keys in by_group.values():
        order = sorted(keys, key=lambda k: (-(scores[k] if scores[k] is not None else -math.inf), list(scores).index(k)))
        kept.update(order[:max(math.ceil(len(keys) / eta), 1)])
    return [k for k in scores if k in kept], [k for k in scores if k not in kept]
