# PYTHON_ARGCOMPLETE_OK
"""The ``batchq`` command line. Every option falls back to a ``BATCHQ_*`` variable (see
:class:`batchq.settings.Settings`); every reporting command takes ``--json``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from batchq.client import BatchClient
from batchq.errors import BatchqError, ConfigError
from batchq.settings import Settings, build_settings
from batchq.store.connection import redis_errors
from batchq.store.stride import DEFAULT_PRIORITY, DEFAULT_WEIGHT

if TYPE_CHECKING:
    from batchq.records import BatchStatus
    from batchq.store.batches import BatchStore

__all__ = ["main"]


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        name: getattr(args, name, None)
        for name in (
            "redis_url",
            "ollama_host",
            "prefix",
            "concurrency",
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
    }
    return build_settings(**overrides)


@contextlib.asynccontextmanager
async def _store(settings: Settings) -> AsyncIterator[tuple[BatchStore, str]]:
    async with BatchClient(settings) as client:
        url = client.redis_url or ""
        with redis_errors(url):
            yield client.store, url


def _print(args: argparse.Namespace, data: Any, human: Callable[[], None]) -> None:
    if args.json:
        print(json.dumps(data, ensure_ascii=False))
    else:
        human()


def _meta_text(s: BatchStatus) -> str:
    return " ".join(f"{k}={v}" for k, v in s.metadata.items())


def _human_status(s: BatchStatus) -> None:
    print(f"batch     {s.batch_id}" + (f"  ({s.name})" if s.name else ""))
    print(f"state     {s.state.value}")
    if s.metadata:
        print(f"meta      {_meta_text(s)}")
    expired = f", {s.expired} expired" if s.deadline or s.expired else ""
    print(
        f"items     {s.total} total: {s.queued} queued, {s.running} running, "
        f"{s.succeeded} succeeded, {s.failed} failed, {s.cancelled} cancelled{expired}"
    )
    print(f"dispatch  priority {s.priority}, weight {s.weight:g}")
    if s.notify:
        print(f"notify    {s.notify}")
    for label, value in (
        ("deadline", s.deadline),
        ("created", s.created_at),
        ("started", s.started_at),
        ("finished", s.finished_at),
    ):
        if value:
            print(f"{label:<9} {value}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="batchq", description="A persistent batch-inference queue for Ollama."
    )
    p.add_argument("--version", action=_Version)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # The commands live in modules by theme; they import this one's helpers, so they are
    # imported here rather than at the top.
    from batchq.cli import control as cli_control
    from batchq.cli import home as cli_home
    from batchq.cli import run as cli_run
    from batchq.cli import watch as cli_watch

    def cmd(name: str, help: str, *, redis: bool = True, json_out: bool = True) -> Any:
        sp = sub.add_parser(name, help=help, description=help)
        if redis:
            sp.add_argument(
                "--redis", dest="redis_url", metavar="URL", help="Redis URL (BATCHQ_REDIS_URL)"
            )
            sp.add_argument("--prefix", help="key namespace (BATCHQ_PREFIX, default batchq)")
        if json_out:
            sp.add_argument("--json", action="store_true", help="machine-readable output")
        return sp

    def input_args(sp: Any) -> None:
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

    def worker_args(sp: Any) -> None:
        sp.add_argument("--ollama", dest="ollama_host", metavar="URL", help="(OLLAMA_HOST)")
        sp.add_argument("--concurrency", type=int, help="requests in flight per worker")
        sp.add_argument(
            "--ollama-queue",
            type=int,
            metavar="N",
            help="requests beyond the concurrency, waiting in Ollama's queue (default: a quarter)",
        )
        sp.add_argument("--rate", type=float, help="most requests started per second")
        sp.add_argument("--timeout", type=float, help="seconds per request (default 600)")
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

    def output_args(sp: Any, format_flag: str) -> None:
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

    sp = cmd("submit", "validate a file and queue it as a batch; prints the batch id")
    input_args(sp)
    sp.set_defaults(handler=cli_run.cmd_submit)

    sp = cmd("worker", "run a worker that sends queued items to Ollama", json_out=False)
    worker_args(sp)
    sp.add_argument("--burst", action="store_true", help="exit when no work is left")
    sp.add_argument(
        "--metrics-port",
        type=int,
        help="serve this worker's Prometheus metrics on this port (BATCHQ_METRICS_PORT)",
    )
    sp.add_argument("--metrics-host", help="address the metrics port listens on (default 0.0.0.0)")
    sp.add_argument("-v", "--verbose", action="store_true")
    sp.set_defaults(handler=cli_run.cmd_worker, sync=True)

    sp = cmd("status", "a batch's progress (all recent batches without an id)")
    sp.add_argument("batch_id", nargs="?")
    sp.add_argument("--limit", type=int, default=50, help="batches listed without an id")
    sp.add_argument(
        "--watch",
        action="store_true",
        help="follow the batch until it is final: live on a terminal, else a line per refresh",
    )
    sp.add_argument(
        "--interval",
        type=float,
        help="seconds between refreshes (default 1 on a terminal, 10 otherwise)",
    )
    sp.set_defaults(handler=cli_watch.cmd_status)

    sp = cmd("top", "live workers: host, Ollama endpoints, items in flight, last error")
    sp.add_argument("--once", action="store_true", help="print once (always, when piped)")
    sp.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    sp.set_defaults(handler=cli_watch.cmd_top)

    sp = cmd("metrics", "serve queue-level Prometheus metrics read from Redis", json_out=False)
    sp.add_argument("--port", type=int, default=9464, help="default 9464")
    sp.add_argument("--host", default="0.0.0.0", help="listen address (default 0.0.0.0)")
    sp.add_argument(
        "--batches",
        type=int,
        default=20,
        help="recent batches given per-batch series, besides the unfinished ones (default 20)",
    )
    sp.set_defaults(handler=cli_watch.cmd_metrics)

    sp = cmd("serve", "a web page of batches and workers, refreshed live", json_out=False)
    sp.add_argument("--port", type=int, default=8470, help="default 8470")
    sp.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    sp.add_argument("--limit", type=int, default=50, help="most recent batches shown")
    sp.set_defaults(handler=cli_watch.cmd_serve)

    sp = cmd("results", "write a batch's results in input order, as JSONL", json_out=False)
    sp.add_argument("batch_id")
    sp.add_argument("-o", "--output", default="-", help="file to write (default stdout)")
    sp.add_argument("--wait", action="store_true", help="wait until every item is final")
    output_args(sp, "--format")
    sp.set_defaults(handler=cli_run.cmd_results)

    sp = cmd("cancel", "cancel a batch: items not yet sent are not sent")
    sp.add_argument("batch_id")
    sp.set_defaults(handler=cli_control.cmd_cancel)

    sp = cmd("pause", "pause a batch: nothing more is sent; requests already sent finish")
    sp.add_argument("batch_id")
    sp.set_defaults(handler=cli_control.cmd_pause)

    sp = cmd("resume", "resume a paused batch where it stopped")
    sp.add_argument("batch_id")
    sp.set_defaults(handler=cli_control.cmd_resume)

    sp = cmd("repair", "find items that are neither final, queued nor running; queue them again")
    sp.add_argument("batch_id")
    sp.set_defaults(handler=cli_control.cmd_repair)

    cli_control.add_commands(cmd)

    sp = cmd("limits", "show or change the global limits of an Ollama endpoint")
    sp.add_argument("--ollama", dest="ollama_host", metavar="URL", help="(OLLAMA_HOST)")
    sp.add_argument(
        "--rate", dest="limit_rate", type=float, help="requests per second, all workers (0: none)"
    )
    sp.add_argument(
        "--concurrency", dest="limit_concurrency", type=int, help="requests in flight (0: none)"
    )
    sp.add_argument(
        "--tpm", dest="limit_tpm", type=int, help="tokens per minute, all workers (0: none)"
    )
    sp.add_argument("--clear", action="store_true", help="remove all limits")
    sp.set_defaults(handler=cli_control.cmd_limits)

    sp = cmd("list", "recent batches, newest first")
    sp.add_argument("--limit", type=int, default=50)
    sp.set_defaults(handler=cli_watch.cmd_list)

    sp = cmd("run", "submit, process with local workers, and write results, all in one")
    input_args(sp)
    worker_args(sp)
    sp.add_argument("-o", "--output", required=True, help="results file (- for stdout)")
    sp.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    sp.add_argument("--strict", action="store_true", help="exit 1 if any item failed")
    output_args(sp, "--output-format")
    sp.set_defaults(handler=cli_run.cmd_run)

    sp = cmd("bench", "run the same prompts on several models through the queue; compare them")
    sp.add_argument("--models", required=True, help="comma-separated, e.g. qwen3:8b,gemma3:4b")
    sp.add_argument("--prompt", action="append", help="a prompt (repeat for several)")
    sp.add_argument(
        "--prompt-file", metavar="FILE", help="more prompts: any file `batchq submit` takes"
    )
    sp.add_argument("--runs", type=int, default=3, help="times each prompt runs (default 3)")
    worker_args(sp)
    # One request at a time by default, none waiting in Ollama's queue: the figures are then
    # each model's own speed and latency.
    sp.set_defaults(concurrency=1, ollama_queue=0)
    sp.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    sp.set_defaults(handler=cli_run.cmd_bench)

    cli_home.add_commands(cmd)

    sp = cmd(
        "sim",
        "run the Ollama simulator (simulated answers, for trying batchq)",
        redis=False,
        json_out=False,
    )
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, default=11434)
    from batchq.sim.config import SimConfig

    for f in dataclasses.fields(SimConfig):
        about = f.metadata.get("help")
        sp.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f"sim_{f.name}",
            type=str if "parse" in f.metadata else type(f.default),
            metavar=f.name.upper(),
            help=(f"{about}; " if about else "") + f"default {_default_text(f)}",
        )
    sp.set_defaults(handler=cli_run.cmd_sim, sync=True)
    return p


def _default_text(f: dataclasses.Field[Any]) -> str:
    if isinstance(f.default, tuple):
        parts = [p if isinstance(p, str) else f"{p[0]}={p[1]:g}" for p in f.default]
        return ",".join(parts) or "none"
    return str(f.default)


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
        print(f"batchq: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _stdout_closed()
