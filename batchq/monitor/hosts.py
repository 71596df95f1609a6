"""The Host check of batchq's HTTP servers (``serve``, and the metrics on loopback): a defence
against DNS rebinding.

A page on any web site can make its own name resolve to 127.0.0.1 (or a LAN address) and then
read the status page as same-origin; all it cannot change is the Host header, which still
names the attacker's domain. So the server answers only Host values that name it: the address
it listens on; ``localhost``, ``127.0.0.1`` and ``[::1]`` when that is a loopback or wildcard
address; on a wildcard address (``0.0.0.0``, ``::``) also the machine's host name and the
address a request came in on; and whatever ``--allow-host``/``BATCHQ_ALLOWED_HOSTS`` names
(``*``: any). Anything else gets 421 Misdirected Request.

The metrics endpoints (``batchq metrics``, ``worker --metrics-port``) check the Host header
only while they listen on loopback, their default: Prometheus may scrape a network address by
any name (a compose service, a DNS record) that batchq cannot know, and a listener on the
network is readable by the network anyway.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["HostCheck", "host_of"]

_REFUSED = (
    "this Host header is not one of the server's names; start it with --allow-host NAME "
    "(or BATCHQ_ALLOWED_HOSTS) to accept it\n"
)

_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})


def host_of(header: str) -> str:
    """The host of a Host header, without port, brackets or a trailing dot, in lower case."""
    h = header.strip().lower()
    if h.startswith("["):
        h = h[1:].partition("]")[0]
    elif h.count(":") == 1:  # host:port; more colons is a bare IPv6 address
        h = h.partition(":")[0]
    return h.rstrip(".")


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _is_loopback(host: str) -> bool:
    ip = _ip(host)
    return host == "localhost" if ip is None else ip.is_loopback


@dataclass(frozen=True, slots=True)
class HostCheck:
    """Which Host headers a server listening on ``listen`` answers (``allowed``: the extra
    names it was given)."""

    listen: str
    allowed: frozenset[str]

    @classmethod
    def for_listen(cls, listen: str, allowed: Iterable[str] = ()) -> HostCheck:
        return cls(listen, frozenset(host_of(a) if a != "*" else a for a in allowed if a))

    @property
    def wildcard(self) -> bool:
        return self.listen in _WILDCARDS

    @property
    def loopback(self) -> bool:
        return _is_loopback(host_of(self.listen))

    def names(self) -> frozenset[str]:
        """The host names and address literals answered whatever the connection."""
        names = set(self.allowed)
        if self.wildcard:
            names |= _LOOPBACK_NAMES | {socket.gethostname().lower()}
        else:
            names.add(host_of(self.listen))
            if _is_loopback(host_of(self.listen)):
                names |= _LOOPBACK_NAMES
        return frozenset(names)

    def accepts(self, header: str | None, local_address: str | None = None) -> bool:
        """Whether to answer a request with this Host header that came in on the
        connection's ``local_address``."""
        if "*" in self.allowed or header is None:
            # Without a Host header the client is no browser: nothing to rebind.
            return True
        host = host_of(header)
        names = self.names()
        if host in names:
            return True
        ip = _ip(host)
        if ip is None:
            return False
        if any(_ip(n) == ip for n in names):
            return True
        # On a wildcard address, the address the request reached is one of this machine's.
        local = _ip(local_address) if local_address else None
        return self.wildcard and local is not None and ip == local

    def middleware(self) -> Middleware:
        """An aiohttp middleware that answers 421 to a Host header this check refuses."""

        @web.middleware
        async def check_host(request: web.Request, handler: Handler) -> web.StreamResponse:
            sockname = request.transport.get_extra_info("sockname") if request.transport else None
            local = str(sockname[0]) if sockname else None
            if not self.accepts(request.headers.get("Host"), local):
                return web.Response(status=421, text=_REFUSED)
            return await handler(request)

        return check_host

    def wsgi(self, app: WSGIApplication) -> WSGIApplication:
        """``app`` answering 421 to a Host header this check refuses (prometheus_client's
        server is WSGI)."""

        def check_host(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
            if self.accepts(environ.get("HTTP_HOST")):
                yield from app(environ, start_response)
                return
            start_response("421 Misdirected Request", [("Content-Type", "text/plain")])
            yield _REFUSED.encode()

        return check_host
