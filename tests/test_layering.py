"""Imports point one way, down the pipeline: a lower layer never imports a higher one.

    search.cli
      -> search.optimize | search.ship | search.report          (orchestration)
      -> search.training | search.tracking
      -> search.data
      -> studies | spaces -> ecgmodels
    search.errors, search.versions and search.interrupts are leaves every layer may import.

Siblings in one layer do not import each other either (optimize/ship/report; training/tracking),
so each can be read and changed on its own. Every `import` counts, including those inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("search", "studies", "spaces", "ecgmodels")
LEAVES = {"search", "search.errors", "search.versions", "search.interrupts"}

# Each unit and the units it may import (besides itself and the leaves).
ALLOWED: dict[str, set[str]] = {
    "search.cli": {
        "search.optimize",
        "search.ship",
        "search.report",
        "search.training",
        "search.tracking",
        "search.data",
        "studies",
        "spaces",
        "ecgmodels",
    },
    "search.optimize": {"search.training", "search.tracking", "search.data", "studies", "spaces", "ecgmodels"},
    "search.ship": {"search.training", "search.tracking", "search.data", "studies", "spaces", "ecgmodels"},
    "search.report": {"search.training", "search.tracking", "search.data", "studies", "spaces", "ecgmodels"},
    "search.training": {"search.data", "studies", "spaces", "ecgmodels"},
    "search.tracking": {"search.data", "studies", "spaces", "ecgmodels"},
    "search.data": set(),
    "studies": set(),
    "spaces": {"ecgmodels"},
    "ecgmodels": set(),
}


def unit_of(module: str) -> str | None:
    """The layering unit of a dotted module name, None for third-party modules."""
    if module in LEAVES:
        return module
    for unit in sorted(ALLOWED, key=len, reverse=True):
        if module == unit or module.startswith(unit + "."):
            return unit
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text() if source is None else source, filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this module's package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # `from search import errors` imports the submodule, not the package
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names if target in PACKAGES]
    return found


def source_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (REPO_ROOT / package).rglob("*.py"))


def violations_in(path: Path, source: str | None = None) -> list[str]:
    own = unit_of(module_name(path))
    own_allowed = ALLOWED.get(own, set()) if own is not None else set()
    problems = []
    for line, target in imported_modules(path, source):
        unit = unit_of(target)
        if unit is None or unit == own or unit in LEAVES or unit in own_allowed:
            continue
        problems.append(f"{path.relative_to(REPO_ROOT)}:{line} ({own}) imports {target} ({unit})")
    return problems


def test_every_module_belongs_to_a_unit() -> None:
    orphans = [str(p.relative_to(REPO_ROOT)) for p in source_files() if unit_of(module_name(p)) is None]
    assert orphans == [], "modules outside every layer (add them to ALLOWED): " + ", ".join(orphans)


def test_no_module_imports_a_higher_layer_or_a_sibling() -> None:
    problems = [problem for path in source_files() for problem in violations_in(path)]
    assert problems == [], "imports against the layering:\n" + "\n".join(problems)


def test_leaves_import_nothing_of_ours() -> None:
    for leaf in sorted(LEAVES - {"search"}):
        path = REPO_ROOT / (leaf.replace(".", "/") + ".py")
        if path.exists():
            targets = [t for _, t in imported_modules(path) if unit_of(t) is not None]
            assert targets == [], f"{leaf} must stay a leaf, imports {targets}"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from search.cli import main\n", ["imports search.cli"]),
        ("import search.optimize.worker\n", ["imports search.optimize.worker"]),
        ("from search.data import load_dataset\n", []),
        ("def f():\n    from search.ship import bundle\n", ["imports search.ship"]),
    ],
)
def test_the_check_catches_an_upward_import(source: str, expected: list[str]) -> None:
    found = violations_in(REPO_ROOT / "search" / "training" / "_layering_probe.py", source)
    assert len(found) == len(expected) and all(e in f for e, f in zip(expected, found, strict=True)), found
