"""Imports point down (docs/ARCHITECTURE.md): every import in src/cnnkit, module-level and inside functions.

The layers, bottom to top. A module may import its own package and anything on its own layer or below,
except where a rule below forbids it; importing a higher layer is an error naming the file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "cnnkit"

LAYERS = [
    {"errors", "files", "device", "task_table", "scenes_config", "safe_yaml", "config", "reference", "__init__"},  # ground floor
    {"layers", "models", "registry", "data"},
    {"losses", "metrics", "engine", "transfer"},
    {"tasks"},
    {"inspect", "export", "serve", "search"},
    {"api", "cli", "__main__"},
]
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}

# Imports the layer order would allow but the design forbids (importer -> imported).
FORBIDDEN = {
    ("models", "data"), ("layers", "data"), ("layers", "models"),
    ("engine", "models"), ("engine", "data"), ("engine", "transfer"),
    ("config", "reference"),
}
# Ground-floor helpers import nothing from cnnkit but errors (and config the other ground helpers).
GROUND_ALLOWED = {"errors", "files", "device", "task_table", "scenes_config", "safe_yaml"}


def _imports(path: Path):
    """(line, imported cnnkit top-level name) for every import in `path`, relative ones resolved."""
    relative = path.relative_to(SOURCE).with_suffix("")
    package = list(relative.parts[:-1]) if relative.name != "__init__" else list(relative.parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(["cnnkit", *base, *([node.module] if node.module else [])])
                names = [module] if node.module else [f"{module}.{alias.name}" for alias in node.names]
            elif node.module:
                names = [node.module]
                if node.module == "cnnkit":  # `from cnnkit import tasks` or `from cnnkit import __version__`
                    names = [f"cnnkit.{alias.name if alias.name in LEVEL else '__init__'}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "cnnkit" and len(parts) > 1:
                yield node.lineno, parts[1]


def violations() -> list[str]:
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        here = path.relative_to(SOURCE).with_suffix("").parts[0]
        if here not in LEVEL:
            found.append(f"{path.relative_to(SOURCE)}: package {here!r} has no layer in tests/test_layering.py")
            continue
        for line, target in _imports(path):
            if target == here:
                continue
            where = f"src/cnnkit/{path.relative_to(SOURCE)}:{line}"
            if target not in LEVEL:
                found.append(f"{where}: imports unknown cnnkit.{target}")
            elif here in GROUND_ALLOWED and target not in ("errors", "__init__"):
                found.append(f"{where}: ground-floor {here} imports cnnkit.{target}")
            elif here == "config" and target not in GROUND_ALLOWED:
                found.append(f"{where}: config imports cnnkit.{target}")
            elif LEVEL[target] > LEVEL[here]:
                found.append(f"{where}: {here} (layer {LEVEL[here]}) imports {target} (layer {LEVEL[target]}), "
                             "which is above it")
            elif (here, target) in FORBIDDEN:
                found.append(f"{where}: {here} must not import {target}")
    return found


def test_imports_point_down():
    found = violations()
    assert not found, "imports that point the wrong way:\n" + "\n".join(found)


@pytest.mark.parametrize("source, expected", [
    ("from cnnkit.api import load\n", "imports api"),
    ("def f():\n    from cnnkit.tasks import task_info\n", "imports tasks"),
    ("from ..models import anatomy\n", "must not import models"),
])
def test_the_check_catches_upward_imports(tmp_path, monkeypatch, source, expected):
    """A planted upward import in engine/ is reported with its file and line."""
    fake = tmp_path / "cnnkit"
    (fake / "engine").mkdir(parents=True)
    (fake / "engine" / "planted.py").write_text(source)
    monkeypatch.setattr(__import__(__name__), "SOURCE", fake, raising=False)
    globals()["SOURCE"], original = fake, SOURCE
    try:
        found = violations()
    finally:
        globals()["SOURCE"] = original
    assert len(found) == 1 and "src/cnnkit/engine/planted.py:" in found[0] and expected in found[0], found
