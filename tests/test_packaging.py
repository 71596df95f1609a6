"""What a bare install brings is what the product needs: every third-party module that
``batchq`` and ``workers`` import is a runtime dependency (not only a test extra), the Dockerfile
installs the same as README step 1, and `.ci/run` tries that install before the test extras.

The suite itself runs in a venv with the test extras, where a missing runtime dependency would
be hidden; these checks read the sources instead, so they fail there too.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGES = ("batchq", "workers")


def _project() -> dict[str, object]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project: dict[str, object] = data["project"]
    return project


def _dist_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group()).lower()


def _runtime_dists() -> set[str]:
    deps = _project()["dependencies"]
    assert isinstance(deps, list)
    return {_dist_name(d) for d in deps}


def imported_modules(sources: list[Path], root: Path = ROOT) -> dict[str, str]:
    """Top-level modules imported anywhere in ``sources`` (lazy imports included), each with
    one place that imports it."""
    found: dict[str, str] = {}
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], f"{path.relative_to(root)}:{node.lineno}")
    return found


def _third_party(modules: dict[str, str]) -> dict[str, str]:
    return {
        m: where
        for m, where in modules.items()
        if m not in sys.stdlib_module_names and m not in PACKAGES and m != "__future__"
    }


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_every_runtime_import_is_a_declared_dependency() -> None:
    by_module = importlib.metadata.packages_distributions()
    runtime = _runtime_dists()
    missing = []
    for module, where in sorted(_third_party(imported_modules(_sources())).items()):
        dists = {_dist_name(d) for d in by_module.get(module, [module])}
        if not dists & runtime:
            missing.append(f"{module} (imported at {where}; from {sorted(dists)})")
    assert not missing, f"imported by the product but not in [project] dependencies: {missing}"


def test_every_declared_dependency_is_used() -> None:
    by_module = importlib.metadata.packages_distributions()
    used = {
        _dist_name(d)
        for module in _third_party(imported_modules(_sources()))
        for d in by_module.get(module, [module])
    }
    assert _runtime_dists() - used == set(), "declared but never imported by batchq or workers"


def test_the_check_sees_a_lazy_import(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("def f():\n    import httpx\n    from ollama import Client\n")
    (tmp_path / "n.py").write_text("from . import sibling\nimport json\nimport batchq.x\n")
    found = imported_modules(sorted(tmp_path.glob("*.py")), tmp_path)
    assert set(_third_party(found)) == {"httpx", "ollama"}
    assert found["httpx"] == "m.py:2"


def _pip_installs(text: str) -> list[str]:
    """The arguments of each `pip install` in a Dockerfile or shell script, options dropped."""
    installs = []
    for m in re.finditer(r"pip install ([^\n&;]*)", text):
        args = [a.strip("'\"") for a in m.group(1).split() if not a.startswith("-")]
        installs.append(" ".join(args))
    return installs


def test_dockerfile_installs_what_readme_step_1_installs() -> None:
    readme = (ROOT / "README.md").read_text()
    step1 = next(line for line in readme.splitlines() if line.startswith("python3 -m venv"))
    assert _pip_installs(step1) == ["."], step1  # the project itself, no extras
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert _pip_installs(dockerfile) == ["."], "the image must install exactly the project"
    # Everything the build reads: the packages setuptools finds and the readme it names.
    for need in (*PACKAGES, str(_project()["readme"]), "pyproject.toml"):
        assert re.search(rf"^COPY .*\b{re.escape(need)}\b", dockerfile, re.M), need


def test_ci_runs_the_bare_install_and_the_main_job_before_the_extras() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    step1 = next(line for line in readme.splitlines() if line.startswith("python3 -m venv"))
    install = step1.split(" && .venv/bin/batchq")[0]
    bare = ci.index(install)
    first_contact = ci.index(".venv/bin/python .ci/first_contact.py")
    extras = ci.index("pip install --quiet -e '.[test]'")
    assert bare < first_contact < extras
    assert _pip_installs(ci[bare:first_contact]) == ["."]
