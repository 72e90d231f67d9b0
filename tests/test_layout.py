"""The package layout as a tested property: one room per concern, imports run one way only.

The levels below are the README's "Layout" section. A room may import rooms on lower levels
only (never its own level's neighbours, never upwards), so there is no cycle between rooms;
the flat modules of ``kdep_cache/`` are the few named ones, and no module shadows the standard
library. The import graph is read with ``ast`` (no import is executed).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "kdep_cache"

LEVELS = {  # room -> level; a room imports only rooms of a lower level
    "errors": 0, "names": 0, "kdep_cache": 0,
    "checks": 1, "storage": 1,
    "runtime": 2, "views": 2, "models": 2,
    "cache": 3,
    "fit": 4, "extract": 4, "audit": 4,
    "train": 5,
    "transfer.classification": 6,
    "transfer.dense": 7, "diagnose": 7,  # diagnose's downstream check renders as the probe does
    "transfer": 8,
    "cli": 9, "__main__": 10,
}
FLAT = {"__init__", "__main__", "errors", "names"}  # + the checks/ package (torch-free)


def _room(mod: str) -> str:
    parts = mod.split(".")[1:]
    if not parts:
        return "kdep_cache"
    if parts[0] == "transfer" and len(parts) > 1 and parts[1] in ("classification", "dense"):
        return f"transfer.{parts[1]}"
    return parts[0]


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mod = ".".join(parts[:-1] if is_pkg else parts)
        yield path, mod, (mod if is_pkg else mod.rpartition(".")[0])


def _is_module(name: str) -> bool:
    path = PKG.parent / name.replace(".", "/")
    return path.is_dir() or path.with_suffix(".py").is_file()


def _edges() -> dict[tuple[str, str], set[str]]:
    edges: dict[tuple[str, str], set[str]] = {}
    for path, mod, pkg in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                    targets = [".".join(base + ([node.module] if node.module else []))]
                elif node.module:
                    targets = [node.module]
                if targets[0] == "kdep_cache" or (PKG.parent / targets[0].replace(".", "/")).is_dir():
                    targets = [f"{targets[0]}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                if t.split(".")[0] != "kdep_cache":
                    continue
                if not _is_module(t):  # an attribute of a package (``from .. import __version__``)
                    t = t.rpartition(".")[0]
                if _room(t) != _room(mod):
                    edges.setdefault((_room(mod), _room(t)), set()).add(mod)
    return edges


def test_every_room_has_a_level():
    rooms = {_room(mod) for _, mod, _ in _modules()}
    assert rooms <= set(LEVELS), f"rooms without a level: {sorted(rooms - set(LEVELS))}"


def test_imports_run_one_way():
    bad = [f"{a} -> {b} ({', '.join(sorted(ms))})" for (a, b), ms in sorted(_edges().items())
           if LEVELS[b] >= LEVELS[a]]
    assert not bad, "imports that run sideways or upwards:\n" + "\n".join(bad)


def test_only_the_named_modules_are_flat():
    assert {p.stem for p in PKG.glob("*.py")} == FLAT


def test_no_module_shadows_the_standard_library():
    names = {p.stem for p in PKG.rglob("*.py")} | {p.name for p in PKG.rglob("*") if p.is_dir()}
    assert not names & set(sys.stdlib_module_names), sorted(names & set(sys.stdlib_module_names))


def test_the_graph_is_read_at_all():
    # the check above cannot pass vacuously: the reader finds the stages' known imports
    edges = _edges()
    assert ("cli", "extract") in edges and ("train", "cache") in edges
    assert ("transfer.classification", "train") in edges and ("transfer", "transfer.dense") in edges
