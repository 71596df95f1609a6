"""``batchq home``: the embedded Valkey server under ``BATCHQ_HOME``, which any command starts
when no Redis is configured, and which keeps running after it: where it is, and ``stop``.

Registered by :func:`register`; it shares :mod:`batchq.cli.common`'s output conventions (human
text, or ``--json``) and error handling.
"""

from __future__ import annotations

import argparse
from typing import Any

from batchq.cli.common import Command, emit, settings_from
from batchq.redact import redact_url
from batchq.store.embedded import EmbeddedServer

__all__ = ["cmd_home", "register"]


def cmd_home(args: argparse.Namespace) -> int:
    server = EmbeddedServer(settings_from(args).home)
    where = f"BATCHQ_HOME={server.home}"
    if args.action == "stop":
        url = _shown(server.url())
        stopped = server.stop()
        data: dict[str, Any] = {"home": str(server.home), "stopped": stopped}
        text = (
            f"stopped the embedded server at {url} ({where}); the next command starts it again"
            if stopped
            else f"no embedded server runs for {where}"
        )
    else:
        url = _shown(server.url())
        data = {"home": str(server.home), "running": url is not None, "url": url}
        text = f"{where}: embedded server " + (f"running at {url}" if url else "not running")
    emit(args, data, lambda: print(text))
    return 0


def _shown(url: str | None) -> str | None:
    # Its password is in the home's password file, for whoever may read it; not on screen.
    return None if url is None else redact_url(url)


def register(cmd: Command) -> None:
    """``cmd(name, help, redis=False)`` makes a subcommand parser with the common options."""
    sp = cmd(
        "home",
        "the embedded Valkey server of BATCHQ_HOME (started by any command without a Redis "
        "URL): show it, or stop it",
        redis=False,
    )
    sp.add_argument(
        "action",
        nargs="?",
        choices=["show", "stop"],
        default="show",
        help="show (default): its address if it runs; stop: shut it down and wait until it "
        "is gone (data stays on disk)",
    )
    sp.set_defaults(handler=cmd_home, sync=True)
