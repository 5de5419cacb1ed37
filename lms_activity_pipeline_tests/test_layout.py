"""The architecture's rules (docs/architecture.md), checked on the source: who may import Dagster, how deep
the imports go."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[1] / "lms_activity_pipeline"
#: Library packages: plain Python services and data access, no Dagster.
LIBRARIES = ("domain", "lms", "warehouse", "notify", "polling", "ingest", "service")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(name: str) -> set[str]:
    """The package's modules ``name`` imports (at any level of the file)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name and target != "lms_activity_pipeline":
                found.add(target)
    return found


def third_party(name: str) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            roots.add(node.module.split(".")[0])
    return roots


@functools.cache
def longest_chain(name: str, seen: frozenset[str] = frozenset()) -> tuple[str, ...]:
    best: tuple[str, ...] = (name,)
    for target in imports(name) - seen:
        chain = (name, *longest_chain(target, seen | {name}))
        best = max(best, chain, key=len)
    return best


def test_library_packages_do_not_import_dagster() -> None:
    offenders = [
        name
        for name in MODULES
        if name.split(".")[1:2] and name.split(".")[1] in LIBRARIES and "dagster" in third_party(name)
    ]
    assert offenders == []


def test_domain_is_pure() -> None:
    allowed = {
        "__future__",
        "collections",
        "dataclasses",
        "datetime",
        "enum",
        "hashlib",
        "json",
        "math",
        "re",
        "typing",
        "unicodedata",
        "zoneinfo",
        "numpy",
        "pandas",
        "sklearn",  # learned at-risk model (issue 13): pure computation, fitting only
        "lms_activity_pipeline",
        "functools",
        "itertools",
        "time",
        "urllib",
    }  # time.sleep only as an injectable default; urllib.parse for a path
    offenders = {
        name: third_party(name) - allowed for name in MODULES if name.startswith("lms_activity_pipeline.domain")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_import_chain_from_the_cli_down_is_at_most_ten_modules() -> None:
    chain = longest_chain("lms_activity_pipeline.cli")
    assert len(chain) <= 10, " -> ".join(chain)
