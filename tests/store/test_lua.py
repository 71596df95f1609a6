"""The Lua files and their one registry: every script declares its contract and keeps to it,
loads on a real server, is used, and no Lua is left in the Python modules.

Each check is parametrized over the registry's names, so a new script is covered as soon as
its file exists. What each script does is tested where its caller is (tests/test_dispatch.py,
test_control_scripts.py, test_admission.py, test_hooks.py, ...) and, for the constants the
scripts take as arguments, in test_lua_arguments.py.
"""

from __future__ import annotations

import ast
import gc
import re
import secrets
import tomllib
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import pytest
from redis.asyncio import Redis

from batchq.store.connection import connect
from batchq.store.lua import SCRIPTS, ScriptRegistry

ROOT = Path(__file__).parents[2]
LUA = ROOT / "batchq" / "store" / "lua"
NAMES = SCRIPTS.names()

_DECL = re.compile(r"^-- (KEYS|ARGV)\[(\d+|#KEYS)\] = (\S.*)$")


@dataclass
class Contract:
    """What a file's header declares."""

    title: str
    keys: dict[int, str] = field(default_factory=dict)
    argv: dict[int, str] = field(default_factory=dict)
    last_key: str | None = None  # a lib's `KEYS[#KEYS] = ...`
    returns: str | None = None
    text: str = ""


def contract(text: str) -> Contract:
    header = []
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        header.append(line)
    found = Contract(header[0] if header else "", text="\n".join(header))
    for line in header:
        if line.startswith("-- Returns: "):
            found.returns = line.removeprefix("-- Returns: ")
        match = _DECL.match(line)
        if match is None:
            continue
        kind, index, what = match.groups()
        if index == "#KEYS":
            found.last_key = what
        else:
            (found.keys if kind == "KEYS" else found.argv)[int(index)] = what
    return found


def code(source: str) -> str:
    """The source without its comments (no string in these scripts holds `--`)."""
    return "\n".join(re.sub(r"--.*$", "", line) for line in source.splitlines())


def role(description: str) -> str:
    return description.split(":")[0]


def used(kind: str, body: str) -> set[int]:
    return {int(n) for n in re.findall(rf"\b{kind}\[(\d+)\]", body)}


# Every function the libs define, and the lib that defines it.
LIB_FUNCTIONS = {
    fn: lib
    for lib in SCRIPTS.libs()
    for fn in re.findall(r"^local function (\w+)\(", SCRIPTS.text(lib), re.MULTILINE)
}


def test_the_scripts_the_readme_names_are_files() -> None:
    readme = (ROOT / "README.md").read_text()
    named = set(re.findall(r"\b(\w+)\.lua\b", readme))
    assert {"dispatch", "start", "finish"} <= named
    assert named <= set(NAMES)


def test_the_lua_files_the_sources_name_exist() -> None:
    for path in [*(ROOT / "batchq").rglob("*.py"), *(ROOT / "batchq").rglob("*.lua")]:
        # A file's name, not a module's (batchq.store.lua).
        for name in re.findall(r"(?<![\w.])((?:lib/)?\w+)\.lua\b", path.read_text()):
            assert name in NAMES or name in SCRIPTS.libs(), f"{path}: {name}.lua"


@pytest.mark.parametrize("name", NAMES)
def test_each_script_opens_with_its_contract(name: str) -> None:
    found = contract(SCRIPTS.text(name))
    assert found.title.startswith(f"-- {name}: "), found.title
    assert found.keys, "no KEYS declared"
    assert sorted(found.keys) == list(range(1, len(found.keys) + 1))
    assert sorted(found.argv) == list(range(1, len(found.argv) + 1))
    assert found.returns, "no '-- Returns: ' line"
    assert found.last_key is None, "only a lib declares KEYS[#KEYS]"


@pytest.mark.parametrize("name", NAMES)
def test_each_script_reads_exactly_the_keys_and_arguments_it_declares(name: str) -> None:
    declared = contract(SCRIPTS.text(name))
    body = code(SCRIPTS.source(name))
    keys = used("KEYS", body)
    if "KEYS[#KEYS]" in body:
        last = len(declared.keys)
        keys.add(last)
        # The lib that reads its key last names the key's role; the script passes that key.
        roles = {
            role(c.last_key)
            for lib in SCRIPTS.includes(name)
            if (c := contract(SCRIPTS.text(lib))).last_key
        }
        assert roles == {role(declared.keys[last])}, (roles, declared.keys[last])
    assert keys == set(declared.keys)
    assert used("ARGV", body) == set(declared.argv)
    if "#ARGV" in body:
        assert "ARGV[#ARGV]" in declared.text, "a variable number of arguments, undeclared"


@pytest.mark.parametrize("name", NAMES)
def test_every_shared_function_is_defined_once_before_it_is_called(name: str) -> None:
    body = code(SCRIPTS.source(name))
    for fn, lib in LIB_FUNCTIONS.items():
        definition = f"local function {fn}("
        assert body.count(definition) <= 1, f"{lib} included twice"
        at = body.find(definition)
        calls = [
            m.start()
            for m in re.finditer(rf"(?<![\w.:]){fn}\(", body)
            if m.start() != at + len("local function ")
        ]
        if calls:
            assert 0 <= at < min(calls), f"{name} calls {fn} without including {lib} first"


@pytest.mark.parametrize("name", SCRIPTS.libs())
def test_each_lib_says_what_it_defines(name: str) -> None:
    found = contract(SCRIPTS.text(name))
    assert found.title.startswith(f"-- {name}: "), found.title
    assert not found.keys and not found.argv, "a lib takes its keys and values as parameters"
    defines = re.search(r"^-- Defines: (.+)\.$", found.text, re.MULTILINE)
    assert defines, "no '-- Defines: ...' line"
    functions = {fn for fn, lib in LIB_FUNCTIONS.items() if lib == name}
    assert functions <= set(defines[1].split(", "))


@pytest.mark.parametrize("name", NAMES)
async def test_each_script_loads_on_the_server(name: str, redis_url: str) -> None:
    client = connect(redis_url)
    try:
        sha = await client.script_load(SCRIPTS.source(name))
        assert sha == SCRIPTS.script(client, name).sha
        assert await client.script_exists(sha) == [True]
    finally:
        await client.aclose()


def _run_names() -> set[str]:
    """The script names the package's code runs: the literal name of every ``SCRIPTS.script``
    call and of every ``self._run`` (:class:`~batchq.store.scripts.ScriptCaller`) call."""
    names: set[str] = set()
    for path in (ROOT / "batchq" / "store").rglob("*.py"):  # where scripts run, and only there
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            on, attr = node.func.value, node.func.attr
            if attr == "script" and isinstance(on, ast.Name) and on.id == "SCRIPTS":
                name = node.args[1]
            elif attr == "_run" and isinstance(on, ast.Name) and on.id == "self":
                name = node.args[0]
            else:
                continue
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                names.add(name.value)
            else:  # only ScriptCaller passes a name through
                assert path.name == "scripts.py", f"{path}: a script not named by a literal"
    return names


def test_every_lua_file_is_used() -> None:
    assert _run_names() == set(NAMES)
    included = {lib for name in NAMES for lib in SCRIPTS.includes(name)}
    assert included == set(SCRIPTS.libs())
    on_disk = {p.relative_to(LUA).with_suffix("").as_posix() for p in LUA.rglob("*.lua")}
    assert on_disk == set(NAMES) | set(SCRIPTS.libs())
    assert not [p for p in (ROOT / "batchq").rglob("*.lua") if not p.is_relative_to(LUA)]


def test_no_lua_is_left_in_the_python_modules() -> None:
    registry = LUA / "__init__.py"
    for path in [*(ROOT / "batchq").rglob("*.py"), *(ROOT / "workers").rglob("*.py")]:
        text = path.read_text()
        assert "redis.call(" not in text and "redis.pcall(" not in text, path
        if path != registry:
            assert "register_script(" not in text, f"{path}: scripts come from the registry"


def test_the_package_ships_every_lua_file() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = data["tool"]["setuptools"]["package-data"]["batchq.store.lua"]
    for path in LUA.rglob("*.lua"):
        rel = path.relative_to(LUA).as_posix()
        assert any(fnmatch(rel, g) and rel.count("/") == g.count("/") for g in globs), rel


async def test_a_script_is_registered_once_per_client() -> None:
    a, b = Redis(), Redis()
    try:
        assert SCRIPTS.script(a, "start") is SCRIPTS.script(a, "start")
        assert SCRIPTS.script(a, "start") is not SCRIPTS.script(b, "start")
        assert SCRIPTS.script(b, "finish").registered_client is b
        # The registry does not keep a client alive once nothing holds its scripts.
        gone = weakref.ref(b)
        held = SCRIPTS.script(b, "finish")
    finally:
        await a.aclose()
        await b.aclose()
    del b, held
    gc.collect()
    assert gone() is None


RegistryOf = Callable[[dict[str, str]], ScriptRegistry]


@pytest.fixture
def registry_of(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RegistryOf:
    """The registry of a throw-away package holding ``files`` (path: text) and an empty lib/."""

    def make(files: dict[str, str]) -> ScriptRegistry:
        name = "luapkg_" + secrets.token_hex(4)
        (tmp_path / name / "lib").mkdir(parents=True)
        (tmp_path / name / "__init__.py").write_text("")
        for path, text in files.items():
            (tmp_path / name / path).write_text(text)
        monkeypatch.syspath_prepend(str(tmp_path))
        return ScriptRegistry(name)

    return make


def test_includes_resolve_in_place_each_lib_once(registry_of: RegistryOf) -> None:
    registry = registry_of(
        {
            "lib/a.lua": "-- a\nlocal function a() end\n",
            "lib/b.lua": '--- @include "lib/a"\nlocal function b() a() end\n',
            "s.lua": '-- s\n--- @include "lib/b"\n--- @include "lib/a"\nreturn b()\n',
        }
    )
    assert registry.names() == ["s"]
    assert registry.libs() == ["lib/a", "lib/b"]
    assert registry.source("s") == (
        "-- s\n-- a\nlocal function a() end\nlocal function b() a() end\nreturn b()\n"
    )
    assert registry.includes("s") == ["lib/b", "lib/a"]


def test_an_include_cycle_or_a_missing_lib_is_refused(registry_of: RegistryOf) -> None:
    registry = registry_of(
        {
            "lib/a.lua": '--- @include "lib/b"\n',
            "lib/b.lua": '--- @include "lib/a"\n',
            "cycle.lua": '--- @include "lib/a"\nreturn 1\n',
            "missing.lua": '--- @include "lib/nothing"\nreturn 1\n',
        }
    )
    with pytest.raises(ValueError, match="lib/a -> lib/b -> lib/a"):
        registry.source("cycle")
    with pytest.raises(KeyError, match="lib/nothing"):
        registry.source("missing")
    with pytest.raises(KeyError, match="nothing"):
        registry.source("nothing")
