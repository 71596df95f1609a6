"""Bounded replies: the Ollama client against a hostile stand-in over a real socket (replies
that never end, lines without end, huge bodies and errors, a stream left open after its final
chunk, absurd counts), and the readers of :mod:`batchq.backends.bounds` on their own."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.base_protocol import BaseProtocol

from batchq.backends.base import Reply, ReplyLimits
from batchq.backends.bounds import MAX_ERROR_CHARS, cap_error, clamp_metrics, lines
from batchq.backends.ollama import METRIC_FIELDS, OllamaClient
from batchq.errors import BackendError, PermanentBackendError, TransientBackendError
from batchq.records import Endpoint, Item
from batchq.settings import Settings
from tests.hostile_ollama import HUGE_COUNT, Hostile, serving
from tests.waits import async_wait_until

MiB = 1 << 20
DEFAULTS = ReplyLimits.defaults()


def gen(word: str) -> Item:
    return Item(word, Endpoint.GENERATE, {"model": "m", "prompt": f"{word} please"})


def embed(word: str) -> Item:
    return Item(word, Endpoint.EMBED, {"model": "m", "input": [word]})


def limits(**kw: int | float) -> ReplyLimits:
    return dataclasses.replace(DEFAULTS, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def hostile() -> AsyncIterator[tuple[Hostile, str]]:
    h = Hostile(piece=1000)
    async with serving(h) as url:
        yield h, url


async def fails(
    url: str, item: Item, lim: ReplyLimits = DEFAULTS, *, stream: bool = True
) -> BackendError:
    async with OllamaClient(url, timeout=10, limits=lim, stream=stream) as c:
        with pytest.raises(BackendError) as e:
            await c.send(item)
    return e.value


async def handler_ended(h: Hostile, name: str) -> None:
    """The behaviour's handler only ends once the client closed the connection."""
    await async_wait_until(lambda: h.ended[name] == h.requests[name], what=f"{name} ended")


def test_the_defaults_are_the_settings_and_fit_16_runaways_in_300_mb() -> None:
    s = Settings()
    assert ReplyLimits.of(s) == DEFAULTS
    assert s.job_timeout > 2 * s.reply_deadline
    # What 20 requests in flight (concurrency 16, a quarter more in Ollama's queue) hold at
    # most while streaming: a pending line each, and the text so far.
    assert Settings(concurrency=16).max_in_flight == 20
    held = 20 * (DEFAULTS.max_line_bytes + DEFAULTS.max_text_bytes)
    assert held <= 120 * MiB
    # A long generation fits: 128k tokens at 16 bytes each, for two hours at 18 tokens/s.
    assert DEFAULTS.max_text_bytes >= 128_000 * 16 and DEFAULTS.deadline >= 128_000 / 18


async def test_a_reply_that_never_ends_fails_at_the_text_cap(
    hostile: tuple[Hostile, str],
) -> None:
    h, url = hostile
    err = await fails(url, gen("runaway"), limits(max_text_bytes=300_000))
    assert isinstance(err, PermanentBackendError) and err.kind == "reply_too_long"
    assert "300000 bytes" in err.message and "BATCHQ_REPLY_MAX_TEXT_BYTES" in err.message
    await handler_ended(h, "runaway")
    # Read as far as the cap, plus what the sockets buffer: not without end.
    assert h.written["runaway"] < 64 * MiB


async def test_the_default_text_cap_stops_a_runaway(hostile: tuple[Hostile, str]) -> None:
    h, url = hostile
    async with OllamaClient(url) as c:
        with pytest.raises(PermanentBackendError) as e:
            await c.send(gen("runaway"))
    assert e.value.kind == "reply_too_long" and "passed 2 MiB" in e.value.message
    await handler_ended(h, "runaway")


@pytest.mark.parametrize("stream", [True, False])
async def test_the_text_cap_counts_utf8_bytes(hostile: tuple[Hostile, str], stream: bool) -> None:
    h, url = hostile
    lim = limits(max_text_bytes=3000)
    h.size = 2000
    async with OllamaClient(url, limits=lim, stream=stream) as c:
        for char, fits in (("x", True), ("\u00e9", False), ("\ud800", False)):
            h.char = char
            if fits:
                assert (await c.send(gen("long_text"))).text == char * 2000
                continue
            with pytest.raises(PermanentBackendError) as e:
                await c.send(gen("long_text"))
            assert e.value.kind == "reply_too_long" and "3000 bytes" in e.value.message
        # Under the cap, a lone surrogate comes back as it was sent.
        h.size = 10
        assert (await c.send(gen("long_text"))).text == "\ud800" * 10


async def test_a_reply_that_keeps_trickling_fails_at_the_deadline(
    hostile: tuple[Hostile, str],
) -> None:
    h, url = hostile
    t0 = time.monotonic()
    # Each chunk comes well within the read timeout (10 s): only the deadline ends it.
    err = await fails(url, gen("trickle"), limits(deadline=1.0))
    assert time.monotonic() - t0 < 5
    assert isinstance(err, PermanentBackendError) and err.kind == "reply_deadline"
    assert "within 1 s" in err.message and "BATCHQ_REPLY_DEADLINE" in err.message
    assert h.written["trickle"] > 0
    await handler_ended(h, "trickle")


async def test_a_line_without_end_fails_at_the_line_cap(hostile: tuple[Hostile, str]) -> None:
    h, url = hostile
    err = await fails(url, gen("endless_line"), limits(max_line_bytes=MiB))
    assert isinstance(err, PermanentBackendError) and err.kind == "line_too_long"
    assert "1 MiB" in err.message and "BATCHQ_REPLY_MAX_LINE_BYTES" in err.message
    await handler_ended(h, "endless_line")
    assert h.written["endless_line"] < 64 * MiB


@pytest.mark.parametrize("announced", [False, True])
async def test_a_300_mb_embed_reply_is_not_read_whole(
    hostile: tuple[Hostile, str], announced: bool
) -> None:
    h, url = hostile
    h.size, h.content_length = 300 * MiB, announced
    err = await fails(url, embed("huge_body"))
    assert isinstance(err, PermanentBackendError) and err.kind == "body_too_large"
    assert "64 MiB" in err.message and "BATCHQ_REPLY_MAX_BODY_BYTES" in err.message
    await handler_ended(h, "huge_body")
    # Refused at its Content-Length before reading any of it, else at the cap.
    assert h.written["huge_body"] < (16 if announced else 128) * MiB


async def test_a_body_under_the_cap_is_read(hostile: tuple[Hostile, str]) -> None:
    h, url = hostile
    h.size = 2 * MiB
    async with OllamaClient(url, limits=limits(max_body_bytes=3 * MiB)) as c:
        r = await c.send(embed("huge_body"))
    assert r.embeddings and len(r.embeddings) == 1


async def test_a_10_mb_error_body_keeps_4_kb(hostile: tuple[Hostile, str]) -> None:
    h, url = hostile
    err = await fails(url, gen("error_body"))
    assert isinstance(err, TransientBackendError) and err.kind == "server_error"
    assert err.message.startswith("runner failed: EEEE")
    assert err.message.endswith(f"[cut at {MAX_ERROR_CHARS} characters]")
    assert len(err.message) < MAX_ERROR_CHARS + 40
    await handler_ended(h, "error_body")


async def test_an_error_line_in_a_stream_keeps_4_kb_and_a_huge_one_is_too_long(
    hostile: tuple[Hostile, str],
) -> None:
    h, url = hostile
    h.size = MiB
    err = await fails(url, gen("error_line"))
    assert (err.kind, err.status_code) == ("stream_error", 200)
    assert err.message == cap_error("E" * MiB) and len(err.message) < MAX_ERROR_CHARS + 40
    h.size = 10 * MiB
    err = await fails(url, gen("error_line"))
    assert err.kind == "line_too_long"


async def test_a_stream_left_open_after_done_gives_its_answer(
    hostile: tuple[Hostile, str],
) -> None:
    h, url = hostile
    t0 = time.monotonic()
    async with OllamaClient(url, timeout=30) as c:
        r = await c.send(gen("done_open"))
        # The connection it left open is closed, not reused: the next reply is whole too.
        again = await c.send(gen("done_open"))
    assert time.monotonic() - t0 < 10  # a second's grace each, nowhere near the 30 s timeout
    for reply in (r, again):
        assert reply.text == "complete" and reply.metrics["done_reason"] == "stop"
    await handler_ended(h, "done_open")


async def test_a_body_that_ends_after_done_keeps_its_connection(
    hostile: tuple[Hostile, str],
) -> None:
    h, url = hostile
    async with OllamaClient(url) as c:
        for _ in range(3):
            assert (await c.send(gen("normal"))).text == "ok"
    assert len(h.peers) == 1


@pytest.mark.parametrize("stream", [True, False])
async def test_absurd_counts_are_clamped(hostile: tuple[Hostile, str], stream: bool) -> None:
    _, url = hostile
    async with OllamaClient(url, stream=stream) as c:
        replies: list[Reply] = [await c.send(gen("huge_count")), await c.send(embed("huge_count"))]
    for r in replies:
        assert r.metrics["prompt_eval_count"] == 2**31 - 1 < HUGE_COUNT
        assert r.metrics["eval_count"] == 0
        assert r.metrics["total_duration"] == 2**53 - 1


def test_clamp_metrics_keeps_only_what_can_be_stored() -> None:
    reply = {
        "prompt_eval_count": "12",
        "eval_count": True,
        "load_duration": float("nan"),
        "eval_duration": 12.7,
        "prompt_eval_duration": float("-inf"),
        "done_reason": "x" * 1000,
        "total_duration": [1],
        "context": [1, 2],
    }
    assert clamp_metrics(reply, METRIC_FIELDS) == {
        "eval_duration": 12,
        "prompt_eval_duration": 0,
        "done_reason": "x" * 100,
    }


def test_cap_error_marks_the_cut() -> None:
    assert cap_error("short") == "short"
    cut = cap_error("y" * (MAX_ERROR_CHARS + 1))
    assert cut == "y" * MAX_ERROR_CHARS + f" [cut at {MAX_ERROR_CHARS} characters]"


async def _lines_of(pieces: list[bytes], max_line: int = 100) -> list[bytes]:
    """The lines of a body that arrives as ``pieces``, one per turn of the loop, as a socket
    would feed them."""
    loop = asyncio.get_running_loop()
    protocol = BaseProtocol(loop)
    protocol.connection_made(asyncio.Transport())  # reads only from what is fed below
    reader = aiohttp.StreamReader(protocol, 1 << 16, loop=loop)

    async def feed() -> None:
        for p in pieces:
            reader.feed_data(p)
            await asyncio.sleep(0)
        reader.feed_eof()

    feeder = asyncio.create_task(feed())
    try:
        return [x async for x in lines(reader, max_line)]
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder


async def test_lines_split_however_the_network_cuts_them() -> None:
    assert await _lines_of([b"ab", b"c\nd", b"\n\nef\n", b"g"]) == [b"abc", b"d", b"", b"ef", b"g"]
    assert await _lines_of([b"x" * 60, b"x" * 40 + b"\n"]) == [b"x" * 100]
    for pieces in ([b"x" * 60, b"x" * 41 + b"\n"], [b"x" * 101], [b"x" * 50] * 3):
        with pytest.raises(PermanentBackendError, match="passed 100 bytes") as e:
            await _lines_of(pieces)
        assert e.value.kind == "line_too_long"


async def test_a_long_line_in_small_pieces_costs_linear_time() -> None:
    # 16 MiB in 1 KiB pieces: re-splitting the whole buffer at every piece (the old reader)
    # scans ~128 GB, minutes of CPU; once per byte, well under a second.
    pieces = [b"x" * 1024] * (16 * 1024) + [b"\n"]
    t0 = time.process_time()
    got = await _lines_of(pieces, max_line=32 * MiB)
    assert [len(x) for x in got] == [16 * MiB]
    assert time.process_time() - t0 < 10
