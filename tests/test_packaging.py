"""What a fresh install relies on: every imported distribution is declared, and the libraries
``encoders`` and ``fusion`` stay free of the job code and of accelerate."""
from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("encoders", "fusion", "multimodal_interest")


def imports(package: str) -> dict[str, str]:
    """Top-level module -> first file importing it, for absolute imports anywhere in ``package``."""
    found: dict[str, str] = {}
    for path in sorted((REPO / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(REPO)))
    return found


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_distribution_is_declared():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = [d for group in project.get("optional-dependencies", {}).values() for d in group]
    declared = {normalise(re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0]) for d in [*project["dependencies"], *extras]}
    owners = md.packages_distributions()
    missing = {}
    for package in PACKAGES:
        for module, where in imports(package).items():
            if module in sys.stdlib_module_names or module in PACKAGES or module == "__future__":
                continue
            dists = {normalise(d) for d in owners.get(module, [module])}
            if not dists & declared:
                missing[module] = where
    assert not missing, f"imported but not in pyproject dependencies: {missing}"


@pytest.mark.parametrize("library", ["encoders", "fusion"])
def test_libraries_do_not_import_the_jobs_or_accelerate(library):
    found = imports(library)
    assert not {"multimodal_interest", "accelerate"} & set(found), found


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports (relative imports resolved), ``a.b`` and ``a.b.name`` for
    ``from a.b import name`` (a name may be a submodule)."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def test_nothing_outside_commands_imports_a_command():
    """docs/architecture.md: commands are the top floor; a library module that needs a
    command's logic takes it from the library module the command calls."""
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel.startswith("multimodal_interest/commands/") or rel == "multimodal_interest/cli.py":
                continue
            bad = sorted(m for m in imported_modules(path)
                         if m == "multimodal_interest.commands" or m.startswith("multimodal_interest.commands."))
            if bad:
                found[rel] = bad
    assert not found, f"modules outside commands/ importing a command: {found}"


def test_the_closed_form_does_not_import_the_gradient_trainer():
    """``training/trainer.py`` dispatches to the closed form; the closed form takes what both
    return from ``training/result.py``, so the two never import each other."""
    found = {path.relative_to(REPO).as_posix(): sorted(m for m in imported_modules(path)
                                                      if m.startswith("multimodal_interest.training.trainer"))
             for path in sorted((REPO / "multimodal_interest/training/closed_form").rglob("*.py"))}
    assert not {p: m for p, m in found.items() if m}, found
