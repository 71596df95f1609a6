"""The hook POST against hostile receivers on a real socket: one that trickles its headers or
its body is cut off at the deadline, a huge body is not read, a gzip bomb is not decompressed,
and refused addresses are never connected to, however a name resolves."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import tracemalloc
from pathlib import Path

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from batchq.settings import Settings
from tests.receivers import (
    bomb_reply,
    gzip_bomb,
    huge_body,
    plain,
    raw_receiver,
    trickled_body,
    trickled_head,
)
from workers.hook_http import READ_CAP, Progress, TargetRefused, hook_session, post

BODY = b'{"batch_id":"b_x"}'


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """No Redis here: the conftest's settings would run each test once per server."""
    return Settings(home=tmp_path / "home", webhook_secret=None, notify_allow_private=True)


async def send(settings: Settings, url: str, **kw: object) -> tuple[object, Progress]:
    """POST BODY to ``url`` as a worker does; (its reply or the exception, its progress)."""
    progress = Progress()
    async with hook_session(settings, **kw) as client:  # type: ignore[arg-type]
        try:
            return await post(client, url, BODY, {}, settings=settings, progress=progress), progress
        except (TimeoutError, aiohttp.ClientError, TargetRefused) as e:
            return e, progress


async def test_trickled_headers_end_at_the_deadline(settings: Settings) -> None:
    # 0.2 s between bytes: no read ever waits long, only the whole reply is late; left alone
    # the receiver would trickle for a minute.
    async with raw_receiver(trickled_head(0.2, 300)) as rec:
        outcome, progress = await send(settings.with_overrides(notify_timeout=1.0), rec.url)
        assert isinstance(outcome, TimeoutError), outcome
        assert progress.started  # the request went out: a cut POST may have arrived
        await asyncio.wait_for(rec.done.wait(), 30)
    assert rec.sender_left and rec.sent < 300


async def test_a_trickled_error_body_ends_at_the_deadline(settings: Settings) -> None:
    async with raw_receiver(trickled_body(0.2, 300)) as rec:
        outcome, _ = await send(settings.with_overrides(notify_timeout=1.0), rec.url)
        # The status came in time; the excerpt is what came of the body before the deadline.
        assert getattr(outcome, "status", None) == 500, outcome
        excerpt = getattr(outcome, "excerpt", "")
        assert set(excerpt) <= {"x"} and len(excerpt) < 300
        await asyncio.wait_for(rec.done.wait(), 30)
    assert rec.sender_left and rec.sent < 300


@pytest.mark.parametrize("status", [200, 500])
async def test_a_huge_body_is_not_read(settings: Settings, status: int) -> None:
    size = 1 << 30
    async with raw_receiver(huge_body(status, size)) as rec:
        outcome, _ = await send(settings.with_overrides(notify_timeout=60.0), rec.url)
        assert getattr(outcome, "status", None) == status, outcome
        await asyncio.wait_for(rec.done.wait(), 60)
    # The sender hung up long before the gigabyte: only socket buffers' worth was taken.
    assert rec.sender_left and rec.sent < size // 8
    excerpt = getattr(outcome, "excerpt", "")
    if status == 500:
        # The start of the body, printable and short: no escape sequence reaches a terminal.
        assert excerpt.startswith("error: [31mred [0m yyy") and len(excerpt) <= 200
        assert "\x1b" not in excerpt
    else:
        assert excerpt == ""
    assert READ_CAP <= 64 * 1024


async def test_a_gzip_bomb_is_never_decompressed(settings: Settings) -> None:
    bomb = gzip_bomb(256 << 20)
    async with raw_receiver(bomb_reply(500, bomb)) as rec:
        tracemalloc.start()
        try:
            outcome, _ = await send(settings, rec.url)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        await asyncio.wait_for(rec.done.wait(), 60)
    assert rec.requests[0].headers["accept-encoding"] == "identity"
    async with hook_session(settings) as client:
        assert not client.auto_decompress  # a gzip reply stays a few KB of gzip
    assert getattr(outcome, "status", None) == 500 and getattr(outcome, "excerpt", "?") == ""
    # A quarter of a gigabyte once expanded; the sender allocates a sliver of it.
    assert peak < 16 << 20, peak


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/hook",
        "http://[::ffff:169.254.169.254]/hook",
        "http://[fd00:ec2::254]/hook",
    ],
)
async def test_link_local_targets_are_refused_whatever_the_setting(
    settings: Settings, url: str
) -> None:
    outcome, progress = await send(settings.with_overrides(notify_allow_private=True), url)
    assert isinstance(outcome, TargetRefused), outcome
    assert not progress.started


async def test_private_targets_follow_the_setting(settings: Settings) -> None:
    async with raw_receiver(plain(204)) as rec:
        allowed, _ = await send(settings.with_overrides(notify_allow_private=True), rec.url)
        assert getattr(allowed, "status", None) == 204, allowed
        refused, _ = await send(settings.with_overrides(notify_allow_private=False), rec.url)
        assert isinstance(refused, TargetRefused) and "private or loopback" in str(refused)
    assert len(rec.requests) == 1


class Answers(AbstractResolver):
    """A DNS stand-in: every name resolves to ``addresses``, and each lookup is counted."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses
        self.lookups = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups += 1
        return [
            ResolveResult(hostname=host, host=a, port=port, family=family, proto=0, flags=0)
            for a in self.addresses
        ]

    async def close(self) -> None:
        pass


async def test_a_name_is_checked_on_every_address_it_resolves_to(settings: Settings) -> None:
    allow = settings.with_overrides(notify_allow_private=True)
    # One bad address among good ones refuses the name: no connection is tried at all.
    dns = Answers("127.0.0.1", "169.254.169.254")
    outcome, progress = await send(allow, "http://hooks.example.test:9/h", resolver=dns)
    assert isinstance(outcome, TargetRefused) and "169.254.169.254" in str(outcome), outcome
    assert not progress.started and dns.lookups == 1


async def test_the_checked_address_is_the_one_connected_to(settings: Settings) -> None:
    # The name resolves once, through the check, to the receiver's address: the connection
    # goes there (a second lookup, which a rebinding DNS could answer differently, never
    # happens).
    async with raw_receiver(plain(204)) as rec:
        port = rec.url.split(":")[2].split("/")[0]
        dns = Answers("127.0.0.1")
        allow = settings.with_overrides(notify_allow_private=True)
        outcome, _ = await send(allow, f"http://hooks.example.test:{port}/h", resolver=dns)
        assert getattr(outcome, "status", None) == 204, outcome
    assert dns.lookups == 1
    assert rec.requests[0].headers["host"] == f"hooks.example.test:{port}"


async def test_the_system_resolver_is_checked_too(settings: Settings) -> None:
    # This machine's own name resolves (hosts file) to a loopback or private address here.
    name = socket.gethostname()
    try:
        infos = socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)
    except socket.gaierror:
        pytest.skip(f"{name} does not resolve here")
    if all(ipaddress.ip_address(str(i[4][0]).partition("%")[0]).is_global for i in infos):
        pytest.skip(f"{name} resolves to public addresses only")
    deny = settings.with_overrides(notify_allow_private=False)
    outcome, _ = await send(deny, f"http://{name}:9/h")
    assert isinstance(outcome, TargetRefused) and str(outcome).startswith(name), outcome
