"""The CLI commands that change a batch or look at its items: ``cancel``, ``pause``,
``resume``, ``repair``, ``item`` and ``retry``, and ``limits`` for an Ollama endpoint.

Registered by :func:`register`; they share :mod:`batchq.cli.common`'s options, output conventions
(human text, or ``--json``) and error handling.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

from batchq.cli.common import Command, emit, human_status, open_store, settings_from
from batchq.errors import ConfigError
from batchq.records import BatchStatus, ItemInfo, ItemStatus
from batchq.store.batches import BatchStore
from batchq.store.items import item_info, retry_items
from batchq.terminal import printable

__all__ = [
    "cmd_cancel",
    "cmd_limits",
    "cmd_pause",
    "cmd_repair",
    "cmd_resume",
    "register",
]

# A response is shown whole by --json; on a terminal its start is enough.
_RESPONSE_CHARS = 400


def _control(op: Callable[[BatchStore, str], Awaitable[BatchStatus]]) -> Any:
    """A command that changes a batch and prints its status afterwards."""

    async def command(args: argparse.Namespace) -> int:
        async with open_store(settings_from(args)) as (store, _):
            s = await op(store, args.batch_id)
        emit(args, s.model_dump(mode="json"), lambda: human_status(s))
        return 0

    return command


cmd_cancel = _control(BatchStore.cancel)
cmd_pause = _control(BatchStore.pause)
cmd_resume = _control(BatchStore.resume)


async def cmd_repair(args: argparse.Namespace) -> int:
    async with open_store(settings_from(args)) as (store, _):
        n = await store.repair(args.batch_id)
    emit(
        args,
        {"batch_id": args.batch_id, "requeued": n},
        lambda: print(f"{n} lost item(s) of {args.batch_id} queued again"),
    )
    return 0


async def cmd_limits(args: argparse.Namespace) -> int:
    from batchq.store.admission import Admission

    settings = settings_from(args)
    async with open_store(settings) as (store, _):
        adm = Admission(store.redis, store.keys, settings.ollama_hosts[0])
        rate, conc, tpm = args.limit_rate, args.limit_concurrency, args.limit_tpm
        if args.clear or rate is not None or conc is not None or tpm is not None:
            await adm.configure(
                rate=rate, concurrency=conc, tokens_per_minute=tpm, clear=args.clear
            )
        lim = await adm.limits()
    data = {
        "endpoint": lim.endpoint,
        "rate": lim.rate,
        "concurrency": lim.concurrency,
        "tokens_per_minute": lim.tokens_per_minute,
        "in_flight": lim.in_flight,
    }

    def human() -> None:
        rate = f"{lim.rate:g}/s" if lim.rate else "none"
        conc = str(lim.concurrency) if lim.concurrency else "none"
        tpm = f"{lim.tokens_per_minute}/min" if lim.tokens_per_minute else "none"
        print(
            f"{lim.endpoint}: rate {rate}, concurrency {conc}, tokens {tpm},"
            f" in flight {lim.in_flight}"
        )

    emit(args, data, human)
    return 0


def _human_item(info: ItemInfo) -> None:
    print(f"batch     {info.batch_id}")
    print(f"item      {printable(info.custom_id)}  (index {info.index})")
    print(f"status    {info.status.value}")
    print(f"attempts  {info.attempts}")
    for e in info.errors:
        code = f" {e.status_code}" if e.status_code is not None else ""
        when = f"  ({e.at})" if e.at else ""
        print(f"error     #{e.attempt} {printable(f'{e.type}{code}: {e.message}')}{when}")
    r = info.result
    if r is not None and r.response is not None:
        text = r.response.replace("\n", " ")
        if len(text) > _RESPONSE_CHARS:
            text = text[:_RESPONSE_CHARS] + "…"
        print(f"response  {printable(text)}")


async def cmd_item(args: argparse.Namespace) -> int:
    async with open_store(settings_from(args)) as (store, _):
        info = await item_info(store, args.batch_id, args.custom_id)
    emit(args, info.model_dump(mode="json"), lambda: _human_item(info))
    return 0


async def cmd_retry(args: argparse.Namespace) -> int:
    statuses = [ItemStatus.FAILED] if args.failed else []
    statuses += [ItemStatus.EXPIRED] if args.expired else []
    if not statuses and not args.ids:
        raise ConfigError(
            "say which items to run again: --failed, --expired and/or --ids CUSTOM_ID ..."
        )
    async with open_store(settings_from(args)) as (store, _):
        n = await retry_items(store, args.batch_id, statuses=statuses, custom_ids=args.ids or [])
    emit(
        args,
        {"batch_id": args.batch_id, "requeued": n},
        lambda: print(f"{n} item(s) of {args.batch_id} queued again"),
    )
    return 0


def register(cmd: Command) -> None:
    for name, about, handler in (
        ("cancel", "cancel a batch: items not yet sent are not sent", cmd_cancel),
        ("pause", "pause a batch: nothing more is sent; requests already sent finish", cmd_pause),
        ("resume", "resume a paused batch where it stopped", cmd_resume),
        (
            "repair",
            "find items that are neither final, queued nor running; queue them again",
            cmd_repair,
        ),
    ):
        sp = cmd(name, about)
        sp.add_argument("batch_id")
        sp.set_defaults(handler=handler)

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
    sp.set_defaults(handler=cmd_limits)

    sp = cmd("item", "one item's status, attempts, error history and result, by its custom id")
    sp.add_argument("batch_id")
    sp.add_argument("custom_id", help="the item's custom_id (its 0-based index if it set none)")
    sp.set_defaults(handler=cmd_item)

    sp = cmd("retry", "run final items of a batch again, under the same batch id")
    sp.add_argument("batch_id")
    sp.add_argument("--failed", action="store_true", help="every failed item")
    sp.add_argument("--expired", action="store_true", help="every expired item")
    sp.add_argument(
        "--ids", nargs="+", metavar="CUSTOM_ID", help="these items, whatever their final status"
    )
    sp.set_defaults(handler=cmd_retry)
