"""The package's layers, checked on its source: lower layers never import upper ones, no
module reaches into another package's private names, the root stays small (docs/design.md).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import nudgekit

ROOT = Path(nudgekit.__file__).parent

#: bottom to top; a package may import its own modules and any lower layer's
LAYERS = {
    "core": 0,
    "io": 1,
    "evaluation": 1,
    "engines": 2,
    "stores": 2,
    "methods": 2,
    "workflows": 3,
    "cli": 4,
    "integrations": 4,
}


def modules() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def package_of(path: Path) -> str | None:
    parts = path.relative_to(ROOT).parts
    return parts[0] if len(parts) > 1 else None


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, imported names, line) of every nudgekit import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = ["nudgekit", *path.relative_to(ROOT).with_suffix("").parts]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module == "nudgekit" or module.startswith("nudgekit."):
                found.append((module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("nudgekit"):
                    found.append((alias.name, [], node.lineno))
    return found


def test_every_module_belongs_to_a_known_layer():
    packages = {package_of(p) for p in modules()} - {None}
    assert packages <= set(LAYERS), packages - set(LAYERS)


def test_at_most_four_modules_stay_at_the_package_root():
    loose = [p.name for p in ROOT.glob("*.py")]
    assert len(loose) <= 4, loose


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_lower_layers_never_import_upper_ones(path):
    own = package_of(path)
    if own is None:
        return  # the root package: its public face
    for module, _, line in imports(path):
        parts = module.split(".")
        target = parts[1] if len(parts) > 1 else None
        if target is None or target == own or target not in LAYERS:
            continue  # the root (version, public names) or the module's own package
        assert LAYERS[target] < LAYERS[own], f"{path.name}:{line} ({own}) imports {module}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_another_packages_private_names(path):
    own = package_of(path)
    for module, names, line in imports(path):
        parts = module.split(".")
        target = parts[1] if len(parts) > 1 else None
        if target == own:
            continue
        private = [p for p in parts if p.startswith("_")] + [
            n for n in names if n.startswith("_") and n != "__version__"
        ]
        assert not private, f"{path.name}:{line} imports {module} {names}"
