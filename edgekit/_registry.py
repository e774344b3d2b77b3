"""One registry type for what plugins extend (backends, quantizers): names mapped to "module:Class", imported lazily.

Every lookup (names, get, `in`, loaded) first reads the entry points of the registry's group, once, so a plugin that
an installed package declares is known in every path. A plugin's module is other people's code: one that fails to
import is an ArtifactError naming it when asked for by name, and one warning line (once) where all are listed.
"""
from __future__ import annotations

import importlib
import warnings

from .errors import ArtifactError


class Registry:
    def __init__(self, kind: str, group: str):
        self.kind, self.group = kind, group  # "backend", "edgekit.backends"
        self._targets: dict[str, str] = {}  # name -> "module:Class", in order of preference
        self._classes: dict[str, type] = {}
        self._broken: set[str] = set()  # names whose module failed to import (warned once)
        self._entry_points_read = False

    def register(self, name: str, target: str) -> None:
        """Make a class known by name: `target` is "module:Class", imported when it is first asked for."""
        if ":" not in target:
            raise ArtifactError(f"{self.kind} '{name}': expected 'module:Class', got '{target}'")
        self._targets[name] = target
        self._classes.pop(name, None)
        self._broken.discard(name)

    def unregister(self, name: str) -> None:
        """Forget a name (a plugin registered for a while, e.g. by a test)."""
        for d in (self._targets, self._classes):
            d.pop(name, None)
        self._broken.discard(name)

    def _read_entry_points(self) -> None:
        """Register what other installed packages declare in the group, once; a malformed one is one warning."""
        if self._entry_points_read:
            return
        self._entry_points_read = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=self.group):
            if ep.name in self._targets:
                continue
            try:
                self.register(ep.name, ep.value)
            except ArtifactError as e:
                warnings.warn(f"entry point of group {self.group}: {e}; left out", stacklevel=2)

    def names(self) -> list[str]:
        """Registered names, edgekit's own first, then the plugins'."""
        self._read_entry_points()
        return list(self._targets)

    def __contains__(self, name) -> bool:
        return name in self.names()

    def get(self, name: str) -> type:
        """The class registered as `name`; ArtifactError (one line) for an unknown name or a module that fails."""
        if name not in self.names():
            raise ArtifactError(f"unknown {self.kind} '{name}' (choose from {', '.join(self._targets)})")
        if name not in self._classes:
            mod, cls = self._targets[name].split(":")
            try:
                self._classes[name] = getattr(importlib.import_module(mod), cls)
            except Exception as e:  # a plugin's module is other people's code: any failure is reported in one line
                reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
                raise ArtifactError(f"{self.kind} '{name}' ({self._targets[name]}) cannot be loaded: "
                                    f"{type(e).__name__}: {reason}") from None
        return self._classes[name]

    def loaded(self) -> dict[str, type]:
        """Every registered class that loads, by name; one that does not is left out with one warning (once)."""
        out = {}
        for n in self.names():
            try:
                out[n] = self.get(n)
            except ArtifactError as e:
                if n not in self._broken:
                    self._broken.add(n)
                    warnings.warn(f"{e}; left out", stacklevel=2)
        return out
