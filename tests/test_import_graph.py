"""The import graph of `labscale` (shared/labscale) and its stages (`labscale.jobs`, jobs/), read from
the source with `ast`, has no cycle and no library → stage edge; labscale modules are imported at
the top of a file.

Every import counts: function-local ones, those under `if TYPE_CHECKING:`, relative ones (resolved).
Importing `a.b.c` runs the package `a.b` first, so an import also depends on the packages above its
target (not on the importing module's own packages, which are already being imported): that is how
`labscale.x` importing `labscale.plan.builder` can close a cycle through `labscale/plan/__init__.py`.
The same builder runs on a copy of the source with planted faults, to show each check can fail.
"""

from __future__ import annotations

import ast
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = (("shared/labscale", "labscale"), ("jobs", "labscale.jobs"))
"""Source folder → the package it is installed as."""
STAGES = "labscale.jobs"

LOCAL_IMPORT_ALLOWED: set[tuple[str, str]] = {
    # boto3 is an optional extra (labscale[cloud]): open_store imports the module that wraps it only
    # for an s3:// URI, so a lab without the extra can still use a file:// store.
    ("labscale.store", "labscale.store.s3"),
}
"""(module, imported labscale module) pairs allowed inside a function body, each with its reason in a
comment. Function-local imports are otherwise for heavy third-party libraries only (torch, transformers, …)."""


@dataclass(frozen=True)
class Import:
    """One dependency of a module on another labscale module."""

    source: str
    target: str
    line: int
    local: bool
    """Inside a function body."""
    implicit: bool
    """A package above the imported module (run by the import), not named by it."""

    def __str__(self) -> str:
        how = "package of an import" if self.implicit else "function-local import" if self.local else "import"
        return f"{self.source} → {self.target} ({how}, line {self.line})"


def find_modules(repo: Path) -> dict[str, Path]:
    """Module name → its file, for every .py under the roots."""
    modules: dict[str, Path] = {}
    for folder, package in ROOTS:
        base = repo / folder
        for path in sorted(base.rglob("*.py")):
            parts = [p for p in path.relative_to(base).with_suffix("").parts if p != "__init__"]
            modules[".".join([package, *parts])] = path
    return modules


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The module an import of `name` loads: `name` itself, else the longest module prefix of it
    (`labscale.config.ModelConfig` → `labscale.config`)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _imported_names(node: ast.Import | ast.ImportFrom, module: str, is_package: bool,
                    modules: dict[str, Path]) -> list[str]:
    """The labscale modules one import statement names (relative imports resolved)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:
            package = module if is_package else module.rpartition(".")[0]
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            origin = ".".join(base + ([node.module] if node.module else []))
        else:
            origin = node.module or ""
        # `from pkg import x`: the module pkg.x if there is one, else pkg (x is a name defined in it)
        names = [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in modules else origin for alias in node.names]
    found = (_known(n, modules) for n in names if n == "labscale" or n.startswith("labscale."))
    return sorted({n for n in found if n})


def _walk(tree: ast.AST) -> Iterable[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement, and whether it sits inside a function body."""

    def visit(node: ast.AST, local: bool) -> Iterable[tuple[ast.Import | ast.ImportFrom, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child, local
            yield from visit(child, local or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    yield from visit(tree, False)


def find_imports(modules: dict[str, Path]) -> list[Import]:
    """Every dependency between labscale modules, explicit and through packages above an imported module."""
    found: list[Import] = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        own = {module, *_ancestors(module)}
        for node, local in _walk(tree):
            for target in _imported_names(node, module, path.name == "__init__.py", modules):
                if target != module:
                    found.append(Import(module, target, node.lineno, local, implicit=False))
                for package in _ancestors(target):
                    if package in modules and package not in own:
                        found.append(Import(module, package, node.lineno, local, implicit=True))
    return found


def find_cycles(imports: list[Import]) -> list[list[Import]]:
    """One cycle (as the imports that close it) per strongly connected component of more than one module."""
    edges: dict[str, dict[str, Import]] = {}
    for imp in imports:
        edges.setdefault(imp.source, {}).setdefault(imp.target, imp)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return [_one_cycle(component, edges) for component in components]


def _one_cycle(component: list[str], edges: dict[str, dict[str, Import]]) -> list[Import]:
    """The shortest way from the component's first module back to itself, inside the component."""
    start, members = component[0], set(component)
    paths: dict[str, list[Import]] = {start: []}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w, imp in sorted(edges.get(v, {}).items()):
            if w == start:
                return paths[v] + [imp]
            if w in members and w not in paths:
                paths[w] = paths[v] + [imp]
                queue.append(w)
    raise AssertionError(f"no cycle through {start} in its component {component}")


def stage_imports(imports: list[Import]) -> list[Import]:
    """Library modules (shared/labscale) importing a stage module (labscale.jobs.*)."""
    return [imp for imp in imports if not _in_stages(imp.source) and _in_stages(imp.target) and not imp.implicit]


def _in_stages(module: str) -> bool:
    return module == STAGES or module.startswith(STAGES + ".")


def local_imports(imports: list[Import]) -> list[Import]:
    """Function-local imports of labscale modules (those are for heavy third-party libraries only)."""
    return [imp for imp in imports if imp.local and not imp.implicit
            and (imp.source, imp.target) not in LOCAL_IMPORT_ALLOWED]


def describe_cycles(cycles: list[list[Import]]) -> str:
    lines = []
    for cycle in cycles:
        modules = sorted({imp.source for imp in cycle})
        lines.append(f"cycle of {len(modules)} modules ({', '.join(modules)}):")
        lines += [f"    {imp}" for imp in cycle]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    return find_imports(find_modules(REPO))


def test_the_graph_covers_the_package_and_its_stages(imports: list[Import]) -> None:
    modules = find_modules(REPO)
    assert {"labscale.plan.planner", "labscale.spec", "labscale.jobs.prep", "labscale.jobs"} <= set(modules)
    assert any(imp.source == "labscale.jobs.prep" and imp.target == "labscale.stage" for imp in imports)


def test_no_import_cycles(imports: list[Import]) -> None:
    cycles = find_cycles(imports)
    assert not cycles, "import cycles in labscale:\n" + describe_cycles(cycles)


def test_no_library_module_imports_a_stage_module(imports: list[Import]) -> None:
    upward = stage_imports(imports)
    assert not upward, "library → stage imports:\n" + "\n".join(f"    {imp}" for imp in upward)


def test_labscale_modules_are_imported_at_the_top(imports: list[Import]) -> None:
    deferred = local_imports(imports)
    assert not deferred, ("function-local imports of labscale modules (import them at the top; function-local "
                          "imports are for heavy third-party libraries):\n" + "\n".join(f"    {imp}" for imp in deferred))


# ── the checks fail on planted faults ────────────────────────────────────────────────────────────

def _planted(tmp_path: Path, files: dict[str, str]) -> list[Import]:
    """The graph of a copy of the source with `files` (path under the repo → text) added."""
    for folder, _ in ROOTS:
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text, encoding="utf-8")
    return find_imports(find_modules(tmp_path))


def _cycle_sets(imports: list[Import]) -> list[set[str]]:
    return [{imp.source for imp in cycle} for cycle in find_cycles(imports)]


def test_a_planted_cycle_is_found_through_local_type_checking_and_relative_imports(tmp_path: Path) -> None:
    imports = _planted(tmp_path, {
        "shared/labscale/planted_a.py": "def f():\n    from labscale.planted_b import g\n    return g\n",
        "shared/labscale/planted_b.py": ("from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
                                         "    from . import planted_a\n\ndef g():\n    return 1\n"),
    })
    assert {"labscale.planted_a", "labscale.planted_b"} in _cycle_sets(imports)
    assert "labscale.planted_a → labscale.planted_b (function-local import" in describe_cycles(find_cycles(imports))
    assert [str(i) for i in local_imports(imports) if i.source == "labscale.planted_a"] == [
        "labscale.planted_a → labscale.planted_b (function-local import, line 2)"]


def test_a_planted_cycle_through_a_package_init_is_found(tmp_path: Path) -> None:
    imports = _planted(tmp_path, {
        "shared/labscale/plantedpkg/__init__.py": "from labscale.plantedpkg.core import run\n",
        "shared/labscale/plantedpkg/core.py": "from labscale.planted_user import use\n\ndef run():\n    return use\n",
        "shared/labscale/plantedpkg/proto.py": "class Proto:\n    pass\n",
        "shared/labscale/planted_user.py": "from labscale.plantedpkg.proto import Proto\n\ndef use():\n    return Proto\n",
    })
    assert {"labscale.plantedpkg", "labscale.plantedpkg.core", "labscale.planted_user"} in _cycle_sets(imports)


def test_a_planted_library_to_stage_import_is_found(tmp_path: Path) -> None:
    imports = _planted(tmp_path, {"shared/labscale/planted_up.py": "from labscale.jobs.prep import run\n"})
    assert [str(i) for i in stage_imports(imports) if i.source == "labscale.planted_up"] == [
        "labscale.planted_up → labscale.jobs.prep (import, line 1)"]
