"""The addresses a completion hook may go to: link-local never, whatever form hides it;
private and loopback ones as the setting says; public ones always."""

from __future__ import annotations

import ipaddress

import pytest

from batchq.targets import address_refusal, host_refusal

ALWAYS_REFUSED = [
    "169.254.169.254",  # the cloud metadata service
    "169.254.0.1",
    "fe80::1",
    "fd00:ec2::254",  # AWS's, over IPv6
    "100.100.100.200",  # Alibaba's
    "::ffff:169.254.169.254",  # IPv4-mapped
    "64:ff9b::a9fe:a9fe",  # NAT64
    "2002:a9fe:a9fe::1",  # 6to4
    "224.0.0.1",
    "ff02::1",
    "255.255.255.255",
]
PRIVATE = [
    "127.0.0.1",
    "127.8.9.10",
    "::1",
    "10.1.2.3",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.10",
    "fc00::1",
    "fd12:3456::1",
    "100.64.0.1",  # carrier-grade NAT, Tailscale
    "0.0.0.0",
    "::",
    "::ffff:10.0.0.1",
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "172.32.0.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", ALWAYS_REFUSED)
@pytest.mark.parametrize("allow_private", [True, False])
def test_link_local_metadata_and_multicast_are_always_refused(
    address: str, allow_private: bool
) -> None:
    ip = ipaddress.ip_address(address)
    refusal = address_refusal(ip, allow_private=allow_private)
    assert refusal is not None and refusal.startswith(str(ip)), refusal


@pytest.mark.parametrize("address", PRIVATE)
def test_private_and_loopback_follow_the_setting(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert address_refusal(ip, allow_private=True) is None
    refusal = address_refusal(ip, allow_private=False)
    assert refusal is not None and "BATCHQ_NOTIFY_ALLOW_PRIVATE" in refusal


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address), allow_private=False) is None


@pytest.mark.parametrize(
    ("url", "private_ok", "refused"),
    [
        ("http://169.254.169.254/latest", True, "link-local"),
        ("http://[fe80::1%25eth0]:8080/x", True, "link-local"),
        ("http://user:pw@169.254.169.254/", True, "link-local"),
        ("http://localhost:8080/h", True, None),
        ("http://localhost:8080/h", False, "private or loopback"),
        ("http://api.localhost./h", False, "private or loopback"),
        ("http://127.0.0.1/h", False, "private or loopback"),
        ("http://10.0.0.2/h", True, None),
        # Numeric forms that resolvers still map onto 127.0.0.1 or elsewhere.
        ("http://2130706433/h", True, "dotted form"),
        ("http://0x7f.0.0.1/h", True, "dotted form"),
        ("http://127.1/h", True, "dotted form"),
        # A name: only its resolution can tell, at send time.
        ("https://hooks.example.com/h", False, None),
        ("https://8.8.8.8/h", False, None),
    ],
)
def test_what_the_url_alone_shows(url: str, private_ok: bool, refused: str | None) -> None:
    refusal = host_refusal(url, allow_private=private_ok)
    if refused is None:
        assert refusal is None
    else:
        assert refusal is not None and refused in refusal
