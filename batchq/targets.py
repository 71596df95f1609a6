"""Where a completion hook (``--notify URL``) may be sent: the address policy that ``submit``
checks where it is cheap (a literal IP, ``localhost``) and a worker checks on every address a
name resolves to, just before it connects to that very address (:mod:`workers.hook_http`).

- **Always refused**: link-local addresses (169.254.0.0/16, fe80::/10), where clouds serve
  their instance metadata and credentials (169.254.169.254, AWS's fd00:ec2::254, Alibaba's
  100.100.100.200), multicast and broadcast. No receiver of a batch's status lives there.
- **Private, loopback and other non-public addresses** (10/8, 172.16/12, 192.168/16, 127/8,
  ::1, fc00::/7, 100.64/10, 0.0.0.0, ...) only while ``notify_allow_private`` is on (the
  default: batchq is self-hosted, and its receivers are often on the LAN or the same host).
- Public addresses always.

IPv6 forms that carry an IPv4 address (``::ffff:a.b.c.d``, NAT64's ``64:ff9b::/96``, 6to4)
are judged by that address. Core: it imports nothing of batchq.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

__all__ = ["IPAddress", "address_refusal", "host_refusal"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_METADATA = {
    ipaddress.ip_address("fd00:ec2::254"): "AWS's instance metadata service",
    ipaddress.ip_address("100.100.100.200"): "Alibaba Cloud's instance metadata service",
}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_BROADCAST = ipaddress.ip_address("255.255.255.255")

# Numeric IPv4 forms other than a.b.c.d (2130706433, 0x7f.1, 127.1) that resolvers still map
# onto an address: no receiver is named so, and a check must not be fooled by one.
_LEGACY_IPV4 = re.compile(r"^((0x[0-9a-f]*|[0-9]+)\.?){1,4}$", re.IGNORECASE)


def _embedded_v4(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if ip.sixtofour is not None:
            return ip.sixtofour
    return ip


def address_refusal(ip: IPAddress, *, allow_private: bool) -> str | None:
    """Why a hook may not be sent to ``ip``, or None if it may."""
    inner = _embedded_v4(ip)
    shown = str(ip) if inner == ip else f"{ip} ({inner})"
    for addr in {ip, inner}:
        if addr in _METADATA:
            return f"{shown} is {_METADATA[addr]}"
    if inner.is_link_local or ip.is_link_local:
        return f"{shown} is link-local (where cloud metadata services live)"
    if inner.is_multicast or ip.is_multicast or inner == _BROADCAST:
        return f"{shown} is a multicast or broadcast address"
    if inner.is_global:
        return None
    if not allow_private:
        return f"{shown} is a private or loopback address (BATCHQ_NOTIFY_ALLOW_PRIVATE is off)"
    return None


def host_refusal(url: str, *, allow_private: bool) -> str | None:
    """Why a hook may not be sent to ``url``, as far as its host alone tells (a literal IP,
    ``localhost``); None if it may, or if only resolving its name can tell."""
    host = (urlsplit(url).hostname or "").rstrip(".")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if host == "localhost" or host.endswith(".localhost"):
            # RFC 6761: always the loopback interface, whatever a resolver says.
            ip = ipaddress.ip_address("127.0.0.1")
        elif _LEGACY_IPV4.match(host):
            return f"{host} is not an address in dotted form (a.b.c.d)"
        else:
            return None
    return address_refusal(ip, allow_private=allow_private)
