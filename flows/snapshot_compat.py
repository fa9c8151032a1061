"""Recovery snapshots written before the layer move still load.

Bytewax keeps each step's state pickled in ``--recovery-dir``; a pickle names classes by module
path, and the layer move (issue 11) changed those paths (``pipeline.windowing`` is now
``pipeline.ingest.windowing``, ``pipeline.recommend`` a package, ...). Without this, upgrading a
running fleet would fail on its first restart, or lose every home's learned state. Each old module
name resolves, lazily, to the modules that now hold its names; nothing here is imported by the core.
"""

from __future__ import annotations

import importlib
import pkgutil
import sqlite3
import sys
import types
from collections.abc import Callable
from pathlib import Path

# Module paths before the move -> where their contents live now.
LEGACY_MODULES: dict[str, str] = {
    "pipeline.decode": "pipeline.ingest.decode",
    "pipeline.validation": "pipeline.ingest.validation",
    "pipeline.registry": "pipeline.ingest.registry",
    "pipeline.windowing": "pipeline.ingest.windowing",
    "pipeline.home_total": "pipeline.ingest.home_total",
    "pipeline.tabular": "pipeline.ingest.tabular",
    "pipeline.insights": "pipeline.insights.step",
    "pipeline.forecast": "pipeline.insights.forecast",
    "pipeline.anomaly": "pipeline.insights.anomaly",
    "pipeline.recommend": "pipeline.insights.recommend",
    "pipeline.tariff": "pipeline.energy.tariff",
    "pipeline.optimize": "pipeline.energy.optimize",
    "pipeline.plan_input": "pipeline.energy.plan_input",
    "pipeline.device_control": "pipeline.energy.device_control",
}


def _candidates(target: str) -> list[str]:
    """The target module and, for a package, every module inside it."""
    module = importlib.import_module(target)
    names = [target]
    if hasattr(module, "__path__"):
        names += [m.name for m in pkgutil.walk_packages(module.__path__, target + ".")]
    return names


def _finder(targets: list[str]) -> Callable[[str], object]:
    def find(name: str) -> object:
        for target in targets:
            module = importlib.import_module(target)
            if name in vars(module):
                return vars(module)[name]
        raise AttributeError(f"no {name!r} in any of {targets}")

    return find


def _alias(old: str, targets: list[str]) -> None:
    existing = sys.modules.get(old)
    if existing is None:
        try:
            existing = importlib.import_module(old)
        except ImportError:
            existing = None
    if existing is None:
        alias = types.ModuleType(old, f"legacy alias for {targets[0]} (old recovery snapshots)")
        alias.__getattr__ = _finder(targets)  # type: ignore[method-assign]
        sys.modules[old] = alias
    elif "__getattr__" not in vars(existing):
        # A name that is now a package of its own (pipeline.insights): its old classes resolve
        # through a module-level __getattr__, which only runs for names the package lacks.
        existing.__getattr__ = _finder(targets)  # type: ignore[method-assign]


_installed = False


def install() -> None:
    """Make every old module path (and its submodules) resolve; safe to call more than once."""
    global _installed
    if _installed:
        return
    for old, new in LEGACY_MODULES.items():
        targets = _candidates(new)
        _alias(old, targets)
        for sub in targets[1:]:
            _alias(old + sub[len(new):], [sub])
    _installed = True


def rename_steps(recovery_dir: Path, renames: dict[str, str]) -> int:
    """File the snapshots of steps that moved into a composite operator under their new ids.

    Bytewax files each step's state under its full step id and loads only the ids the flow has:
    a step that moves into an operator (``shems_ingest.decode`` -> ``shems_ingest.decode_messages
    .decode``) would start empty and lose every open minute. A snapshot already filed under the
    new id wins, so running this again, or on a directory written after the move, changes
    nothing. Returns how many snapshots were renamed."""
    renamed = 0
    for part in sorted(recovery_dir.glob("part-*.sqlite3")):
        db = sqlite3.connect(part, timeout=30.0)  # other processes of a cluster share the dir
        try:
            with db:
                for old, new in renames.items():
                    renamed += db.execute("UPDATE OR IGNORE snaps SET step_id = ? WHERE step_id = ?",
                                          (new, old)).rowcount
                    # What is left under the old id has a newer copy under the new one.
                    db.execute("DELETE FROM snaps WHERE step_id = ?", (old,))
        finally:
            db.close()
    return renamed
