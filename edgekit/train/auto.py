"""`--strategy auto`: the strategy `edgekit advise` suggests first, from the same measurement and rule.

The rule and its thresholds are in edgekit.advise.rule; the distance from COCO is the Fréchet distance of the
backbone embeddings (edgekit.advise.domain), tipped in its middle band by a class-name/box-size rule.
"""
from __future__ import annotations

from .strategy import Strategy, parse_strategy


def auto_strategy(dataset, epochs: int, pretrained: bool = True) -> tuple[Strategy, list[str]]:
    """The strategy for a loaded edgekit Dataset, with the reasons for it."""
    from ..advise.rule import choose, domain_verdict

    n = len(dataset.samples("train"))
    if not pretrained:
        spec, why = choose(n, "far", epochs, pretrained=False)
        return parse_strategy(spec), why + [f"auto -> {spec}"]
    dom = domain_verdict(dataset)
    spec, why = choose(n, dom["closeness"], epochs)
    return parse_strategy(spec), dom["reasons"] + why + [f"auto -> {spec}"]
