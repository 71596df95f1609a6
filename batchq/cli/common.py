"""What every command shares: settings from its flags, the store it talks to, printing human
text or ``--json``, the status block, and the argument groups several commands take.

Imports no command module: they import this one, and :mod:`batchq.cli.main` imports them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Protocol

from batchq.client import BatchClient
from batchq.options import DEFAULT_PRIORITY, DEFAULT_WEIGHT
from batchq.settings import Settings, build_settings
from batchq.store.connection import redis_errors
from batchq.terminal import printable

if TYPE_CHECKING:
    from batchq.records import BatchStatus
    from batchq.store.batches import BatchStore

__all__ = [
    "Command",
    "emit",
    "human_status",
    "input_args",
    "open_store",
    "output_args",
    "settings_from",
    "worker_args",
]

# The flags that override a Settings field of the same name; a command that lacks one leaves
# the field to its BATCHQ_* variable or default.
_SETTINGS_FLAGS = (
    "redis_url",
    "ollama_host",
    "prefix",
    "concurrency",
    "max_concurrency",
    "ollama_queue",
    "rate",
    "timeout",
    "max_attempts",
    "retry_delay",
    "global_rate",
    "global_concurrency",
    "global_tpm",
    "metrics_port",
    "metrics_host",
)


class Command(Protocol):
    """Makes a subcommand's parser with the common options: ``--redis`` and ``--prefix``
    unless ``redis=False``, ``--json`` unless ``json_out=False``."""

    def __call__(
        self, name: str, help: str, *, redis: bool = True, json_out: bool = True
    ) -> argparse.ArgumentParser: ...


def settings_from(args: argparse.Namespace) -> Settings:
    return build_settings(**{name: getattr(args, name, None) for name in _SETTINGS_FLAGS})


@contextlib.asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[tuple[BatchStore, str]]:
    """The store and its Redis URL; a Redis fault inside becomes one readable error."""
    async with BatchClient(settings) as client:
        url = client.redis_url or ""
        with redis_errors(url):
            yield client.store, url


def emit(args: argparse.Namespace, data: Any, human: Callable[[], None]) -> None:
    if args.json:
        print(json.dumps(data, ensure_ascii=False))
    else:
        human()


def human_status(s: BatchStatus) -> None:
    print(f"batch     {s.batch_id}" + (f"  ({printable(s.name)})" if s.name else ""))
    print(f"state     {s.state.value}")
    if s.metadata:
        print("meta      " + printable(" ".join(f"{k}={v}" for k, v in s.metadata.items())))
    expired = f", {s.expired} expired" if s.deadline or s.expired else ""
    print(
        f"items     {s.total} total: {s.queued} queued, {s.running} running, "
        f"{s.succeeded} succeeded, {s.failed} failed, {s.cancelled} cancelled{expired}"
    )
    print(f"dispatch  priority {s.priority}, weight {s.weight:g}")
    if s.notify:
        print(f"notify    {printable(s.notify)}")
    for label, value in (
        ("deadline", s.deadline),
        ("created", s.created_at),
        ("started", s.started_at),
        ("finished", s.finished_at),
    ):
        if value:
            print(f"{label:<9} {value}")


def input_args(sp: argparse.ArgumentParser) -> None:
    """What ``submit`` and ``run`` take to make a batch of a file."""
    sp.add_argument("file", help="JSONL or .txt file of prompts; - for stdin")
    sp.add_argument("--model", help="model for lines that name none")
    sp.add_argument("--name", help="a label for the batch")
    sp.add_argument("--format", choices=["jsonl", "txt"], help="override the file extension")
    sp.add_argument(
        "--notify",
        metavar="URL",
        help="when the batch is final, one worker POSTs its status JSON here (retried on "
        "failure, never delivered twice)",
    )
    sp.add_argument(
        "--deadline",
        metavar="WHEN",
        help="items not started by then expire: a duration (90m, 1h30m, 2d) or an ISO 8601 "
        "time (local unless it names its zone); running items finish",
    )
    sp.add_argument(
        "--priority",
        type=int,
        default=DEFAULT_PRIORITY,
        help="dispatch order between batches: a higher priority gets every item to dispatch "
        f"before a lower one gets any (integer, default {DEFAULT_PRIORITY})",
    )
    sp.add_argument(
        "--weight",
        type=float,
        default=DEFAULT_WEIGHT,
        help="share of the dispatch among batches of the same priority, proportional to the "
        f"weight (positive, default {DEFAULT_WEIGHT:g})",
    )
    sp.add_argument(
        "--meta",
        action="append",
        metavar="KEY=VALUE",
        help="metadata stored with the batch, shown by status and list (repeatable, at most "
        "16; keys up to 64 characters, values up to 512)",
    )


def _concurrency(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither auto nor a number") from None


def worker_args(sp: argparse.ArgumentParser) -> None:
    """What every command that starts workers (``worker``, ``run``, ``bench``) takes."""
    sp.add_argument("--ollama", dest="ollama_host", metavar="URL", help="(OLLAMA_HOST)")
    sp.add_argument(
        "--concurrency",
        type=_concurrency,
        metavar="auto|N",
        help="requests in flight: auto (default) finds a limit per Ollama host and model, "
        "shared by the host's workers; N: that many per worker, fixed",
    )
    sp.add_argument(
        "--max-concurrency",
        type=int,
        metavar="N",
        help="with auto, the most requests one worker sends at once (default 32)",
    )
    sp.add_argument(
        "--ollama-queue",
        type=int,
        metavar="N",
        help="requests beyond the concurrency, waiting in Ollama's queue (default: a quarter)",
    )
    sp.add_argument("--rate", type=float, help="most requests started per second")
    sp.add_argument(
        "--timeout",
        type=float,
        help="seconds a request may wait for data from Ollama (default 600; all of it: "
        "BATCHQ_REPLY_DEADLINE)",
    )
    sp.add_argument("--max-attempts", type=int, help="attempts per item (default 5)")
    sp.add_argument("--retry-delay", type=float, help="backoff base in seconds (default 1)")
    sp.add_argument(
        "--global-rate",
        type=float,
        help="most requests per second to this Ollama from all workers together (0: none)",
    )
    sp.add_argument(
        "--global-concurrency",
        type=int,
        help="most requests in flight to this Ollama from all workers together (0: none)",
    )
    sp.add_argument(
        "--global-tpm",
        type=int,
        help="most tokens per minute (prompt + reply), all workers together (0: none)",
    )


def output_args(sp: argparse.ArgumentParser, format_flag: str) -> None:
    """How ``results`` and ``run`` write their output."""
    sp.add_argument(
        format_flag,
        dest="output_format",
        choices=["native", "openai"],
        default="native",
        help="batchq's result lines (default) or OpenAI Batch API output lines",
    )
    sp.add_argument(
        "--errors",
        metavar="FILE",
        help="write failed and cancelled items to FILE; the output then holds successes",
    )
