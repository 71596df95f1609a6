"""The Lua scripts of batchq's store, and the one registry that loads them.

One file per script in this folder, named by what it does; the functions several scripts share
are in ``lib/``. Each file starts with its contract, then the libs it needs::

    -- KEYS[1] = meta: the batch's hash
    -- ARGV[1] = batch id
    -- Returns: ...
    --- @include "lib/finalize"

An include line is replaced by the lib's text, each lib at most once per script (a later include
of the same lib adds nothing), and a lib's own includes are resolved where they stand, so every
function is defined before the code that calls it. That is the only Lua text put together here:
constants (arq's key prefixes, payloads, poll intervals) reach the scripts as arguments.

A script is registered once per client (:meth:`ScriptRegistry.script`) and runs by EVALSHA;
redis-py loads it again if the server lost it (a restart, SCRIPT FLUSH).

May import: the standard library and redis only; the store's wrappers (``scripts``,
``control``, ``admission``, ``hooks``, ``stride``) call it.
"""

from __future__ import annotations

import re
import weakref
from importlib import resources
from importlib.resources.abc import Traversable

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

__all__ = ["SCRIPTS", "ScriptRegistry"]

_INCLUDE = re.compile(r'^--- @include "([\w/]+)"[ \t]*$')
_SUFFIX = ".lua"


class ScriptRegistry:
    """The scripts in one package folder: their text with includes resolved, and each one
    registered on a client at most once while something holds it."""

    def __init__(self, package: str) -> None:
        self._package = package
        self._sources: dict[str, str] = {}
        # Keyed by the client's id: a script holds its client, so while an entry lives its
        # client does and the id cannot be reused; when the last holder of a script lets go,
        # the entry goes and the client can be collected.
        self._registered: weakref.WeakValueDictionary[tuple[int, str], AsyncScript] = (
            weakref.WeakValueDictionary()
        )

    def names(self) -> list[str]:
        """Every script, by name (its file without ``.lua``)."""
        return _lua_files(self._root(), "")

    def libs(self) -> list[str]:
        """Every shared file, by the name an include gives it (``lib/<name>``)."""
        return _lua_files(self._root() / "lib", "lib/")

    def text(self, name: str) -> str:
        """The file's own text, includes not resolved (``name``: a script or ``lib/<name>``)."""
        path = self._root().joinpath(*f"{name}{_SUFFIX}".split("/"))
        if not path.is_file():
            raise KeyError(f"no Lua file {name!r} in {self._package}")
        return path.read_text(encoding="utf-8")

    def includes(self, name: str) -> list[str]:
        """The libs the script takes in, directly or through another lib, in the order their
        include lines are met."""
        order: list[str] = []
        self._expand(name, (name,), order)
        return order

    def source(self, name: str) -> str:
        """The script as the server runs it: its text with every include resolved."""
        src = self._sources.get(name)
        if src is None:
            src = self._sources[name] = self._expand(name, (name,), [])
        return src

    def script(self, redis: Redis, name: str) -> AsyncScript:
        """The script ``name`` registered on ``redis``: the same object for every caller
        while one holds it."""
        key = (id(redis), name)
        found = self._registered.get(key)
        if found is not None and found.registered_client is redis:
            return found
        script = redis.register_script(self.source(name))
        self._registered[key] = script
        return script

    def _root(self) -> Traversable:
        return resources.files(self._package)

    def _expand(self, name: str, stack: tuple[str, ...], done: list[str]) -> str:
        out: list[str] = []
        for line in self.text(name).splitlines(keepends=True):
            match = _INCLUDE.match(line.rstrip("\n"))
            if match is None:
                out.append(line)
                continue
            lib = match[1]
            if lib in stack:
                raise ValueError(f"Lua include cycle: {' -> '.join((*stack, lib))}")
            if lib not in done:
                done.append(lib)
                out.append(self._expand(lib, (*stack, lib), done))
        return "".join(out)


def _lua_files(folder: Traversable, prefix: str) -> list[str]:
    return sorted(
        prefix + p.name.removesuffix(_SUFFIX)
        for p in folder.iterdir()
        if p.is_file() and p.name.endswith(_SUFFIX)
    )


SCRIPTS = ScriptRegistry(__name__)
