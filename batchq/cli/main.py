# PYTHON_ARGCOMPLETE_OK
"""The ``batchq`` command line. Every option falls back to a ``BATCHQ_*`` variable (see
:class:`batchq.settings.Settings`); every reporting command takes ``--json``.

The commands live in modules by family, each registering its own; this one builds the parser
from them and runs the chosen command, turning batchq's errors into exit codes."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from batchq.cli import control, home, run, watch
from batchq.errors import BatchqError, ConfigError
from batchq.terminal import printable

__all__ = ["main"]

# In the order `batchq --help` lists them: making and running batches, watching them,
# changing them, the embedded server.
_FAMILIES = (run, watch, control, home)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="batchq", description="A persistent batch-inference queue for Ollama."
    )
    p.add_argument("--version", action=_Version)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(
        name: str, help: str, *, redis: bool = True, json_out: bool = True
    ) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        if redis:
            sp.add_argument(
                "--redis", dest="redis_url", metavar="URL", help="Redis URL (BATCHQ_REDIS_URL)"
            )
            sp.add_argument("--prefix", help="key namespace (BATCHQ_PREFIX, default batchq)")
        if json_out:
            sp.add_argument("--json", action="store_true", help="machine-readable output")
        return sp

    for family in _FAMILIES:
        family.register(cmd)
    return p


class _Version(argparse.Action):
    """``--version``, read from the installed package's metadata only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print batchq's version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        from importlib.metadata import version

        print(f"batchq {version('batchq')}")
        parser.exit()


def _complete(parser: argparse.ArgumentParser) -> None:
    """Answer the shell's completion request, if this is one (then the process exits)."""
    if "_ARGCOMPLETE" not in os.environ:
        return  # argcomplete's import would cost every command ~40 ms
    import argcomplete

    argcomplete.autocomplete(parser)


def _stdout_closed() -> int:
    # The reader went away (`batchq results B | head`), which ends a Unix tool quietly. Later
    # writes, and the interpreter's flush at exit, would raise again: stdout becomes devnull.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + 13  # as a shell reports a tool that SIGPIPE ended


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    _complete(parser)
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], Any] = args.handler
    try:
        if getattr(args, "sync", False):
            code = int(handler(args))
        else:
            coro: Coroutine[Any, Any, int] = handler(args)
            code = asyncio.run(coro)
        if sys.stdout is not None:  # None when started with stdout closed (>&-)
            sys.stdout.flush()  # here, where a closed pipe can still be handled
        return code
    except BatchqError as e:
        # A message may quote a server's reply or a stored name: no raw escapes.
        print(f"batchq: error: {printable(str(e))}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _stdout_closed()
