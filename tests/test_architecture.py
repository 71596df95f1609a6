"""The shape of the code, kept by tests: imports run one way, between modules and between
packages; no module grows past 400 lines; every package says what it owns and what it may import.

Layers, lowest first (a module may import its own layer's modules of its own package, and any
lower layer's):

0. core: errors, settings, clock, records, options, pacing, vectors, redact, terminal, signing,
   targets
1. store/
2. inputs/, results/, backends/, monitor/ (none imports another)
3. client, sync_client, workers/, local/, api/
4. cli/

sim/ stands apart: it plays Ollama, so it imports only the core. ``batchq/__init__`` (the
public names, imported on first use) and ``__main__`` are the facade, outside the layers.
Imports under ``if TYPE_CHECKING:`` count: a cycle of types is a cycle of concepts.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
MAX_LINES = 400

CORE = {
    "errors",
    "settings",
    "clock",
    "records",
    "options",
    "pacing",
    "vectors",
    "redact",
    "terminal",
    "signing",
    "targets",
}
LAYER = {
    "store": 1,
    "inputs": 2,
    "results": 2,
    "backends": 2,
    "monitor": 2,
    "client": 3,
    "sync_client": 3,
    "workers": 3,
    "local": 3,
    "api": 3,
    "cli": 4,
}
FACADE = {"batchq", "batchq.__main__"}


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for top in ("batchq", "workers"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _imports(path: Path) -> Iterator[str]:
    """The batchq and workers modules ``path`` imports, anywhere in it."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import; write it absolute"
            assert node.module
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                # `from batchq import clock` imports the module, not the package.
                yield sub if sub in MODULES else node.module


def _graph() -> dict[str, set[str]]:
    return {
        mod: {m for m in _imports(path) if m in MODULES and m != mod}
        for mod, path in MODULES.items()
    }


def unit(mod: str) -> str:
    """The package a module belongs to (``batchq.store``, ``workers``), or the module itself
    for a top-level module of batchq."""
    parts = mod.split(".")
    if parts[0] == "workers":
        return "workers"
    if len(parts) > 2 or (len(parts) == 2 and (ROOT / "batchq" / parts[1]).is_dir()):
        return ".".join(parts[:2])
    return mod


def layer(mod: str) -> int | None:
    """0 for the core, ... 4 for the CLI; None for the facade and the simulator."""
    if mod in FACADE or unit(mod) == "batchq.sim":
        return None
    name = unit(mod).split(".")[-1]
    if name in CORE:
        return 0
    return LAYER[name]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_find_cycle_finds_one_and_only_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_between_modules() -> None:
    assert find_cycle(_graph()) is None


def test_no_import_cycle_between_packages() -> None:
    packages: dict[str, set[str]] = {}
    for mod, deps in _graph().items():
        if mod in FACADE:
            continue
        packages.setdefault(unit(mod), set()).update(
            unit(d) for d in deps if unit(d) != unit(mod) and d not in FACADE
        )
    assert find_cycle(packages) is None


def test_imports_run_down_the_layers() -> None:
    wrong = []
    for mod, deps in _graph().items():
        here = layer(mod)
        for dep in deps:
            there = layer(dep)
            if dep in FACADE:
                wrong.append(f"{mod} imports the facade {dep}")
            elif unit(mod) == "batchq.sim":
                if there != 0 and unit(dep) != unit(mod):
                    wrong.append(f"{mod} (the simulator) imports {dep}, not the core")
            elif there is None:
                if here != 4:  # `batchq sim` is a command; nothing else runs the simulator
                    wrong.append(f"{mod} imports the simulator's {dep}")
            elif here is None or unit(dep) == unit(mod):
                continue
            elif there > here or (there == here and here in (2, 3) and not _allowed(mod, dep)):
                wrong.append(f"{mod} (layer {here}) imports {dep} (layer {there})")
    assert not wrong, "\n".join(sorted(wrong))


def _allowed(mod: str, dep: str) -> bool:
    """Within layer 3 the blocking client wraps the async one; nothing else crosses."""
    return (unit(mod), unit(dep)) == ("batchq.sync_client", "batchq.client")


def test_the_layer_check_sees_a_wrong_import() -> None:
    assert layer("batchq.store.batches") == 1 and layer("batchq.cli.main") == 4
    assert layer("batchq.errors") == 0 and layer("batchq.sim.server") is None
    assert layer("batchq.monitor.web") == layer("batchq.results.export") == 2


@pytest.mark.parametrize("mod", sorted(MODULES), ids=str)
def test_no_module_is_over_400_lines(mod: str) -> None:
    lines = len(MODULES[mod].read_text().splitlines())
    assert lines <= MAX_LINES, f"{MODULES[mod].relative_to(ROOT)}: {lines} lines"


PACKAGES = sorted(m for m, p in MODULES.items() if p.name == "__init__.py" and m != "batchq")


@pytest.mark.parametrize("pkg", PACKAGES)
def test_every_package_says_what_it_owns_and_may_import(pkg: str) -> None:
    doc = ast.get_docstring(ast.parse(MODULES[pkg].read_text()))
    assert doc and len(doc) > 80, f"{pkg}: no docstring saying what it owns"
    assert "may import" in doc.lower(), f"{pkg}: its docstring does not say what it may import"


def test_ls_batchq_shows_the_concepts() -> None:
    packages = {p.name for p in (ROOT / "batchq").iterdir() if (p / "__init__.py").exists()}
    assert packages >= {"store", "inputs", "results", "backends", "monitor", "local", "sim", "cli"}
    flat = {p.stem for p in (ROOT / "batchq").glob("*.py")} - {"__init__", "__main__"}
    assert flat <= CORE | {"client", "sync_client"}, flat - CORE


def _where_things_live() -> list[tuple[list[str], str]]:
    """README's "Where things live" rows: (the paths of the first cell, the second cell)."""
    text = (ROOT / "README.md").read_text()
    table = text.split("### Where things live", 1)[1].split("\n\n", 2)[2]
    rows: list[tuple[list[str], str]] = []
    for line in table.splitlines()[2:]:  # after the header and its rule
        if not line.startswith("| `"):
            break
        where, what = line.strip("|").split(" | ", 1)
        paths: list[str] = []
        for token in re.findall(r"`([^`]+)`", where):
            # A bare name is a sibling of the path before it: `batchq/errors.py`, `settings.py`.
            base = token if "/" in token else str(Path(paths[-1]).parent / token)
            paths.append(base)
        rows.append((paths, what))
    return rows


def test_where_things_live_names_real_places_and_every_package() -> None:
    rows = _where_things_live()
    assert rows, "README has no Where things live table"
    named = {p.rstrip("/") for paths, _ in rows for p in paths}
    for path in named:
        assert (ROOT / path).exists(), f"README names {path}, which does not exist"
    # The modules a row's description names (`keys.py`) live in the row's folder.
    for paths, what in rows:
        folder = ROOT / paths[0] if paths[0].endswith("/") else (ROOT / paths[0]).parent
        for module in re.findall(r"`(\w+\.py)`", what):
            assert (folder / module).exists(), f"README: {module} is not in {folder.name}/"
    packages = {f"batchq/{p}" for p in ("store", "inputs", "results", "backends", "monitor")}
    packages |= {f"batchq/{p}" for p in ("local", "cli", "sim", "api")} | {"workers", "tests"}
    flat = {f"batchq/{p.name}" for p in (ROOT / "batchq").glob("*.py")}
    assert packages | flat - {"batchq/__init__.py", "batchq/__main__.py"} <= named
