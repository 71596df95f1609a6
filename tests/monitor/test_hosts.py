"""``batchq serve``'s Host check against DNS rebinding: which Host headers each listen address
answers (a real server refusing a forged one is in test_web)."""

from __future__ import annotations

import socket

import pytest

from batchq.monitor.hosts import HostCheck, host_of
from batchq.settings import Settings

# What a rebinding page's requests carry: its own domain, sometimes dressed as ours.
FORGED = ["evil.example:8470", "127.0.0.1.evil.example", "localhost.evil.example", "evil"]


def test_host_of_strips_port_brackets_and_the_trailing_dot() -> None:
    assert host_of("LocalHost.:8470") == "localhost"
    assert host_of("[::1]:8470") == host_of("[::1]") == host_of("::1") == "::1"
    assert host_of("192.0.2.7:80") == "192.0.2.7"


@pytest.mark.parametrize("listen", ["127.0.0.1", "localhost", "::1"])
def test_loopback_answers_loopback_names_only(listen: str) -> None:
    check = HostCheck.for_listen(listen)
    for ok in ["127.0.0.1:8470", "localhost:8470", "[::1]:8470", "LOCALHOST.", "localhost"]:
        assert check.accepts(ok, "127.0.0.1"), ok
    for bad in [*FORGED, "192.0.2.7", socket.gethostname() + ".evil.example"]:
        assert not check.accepts(bad, "127.0.0.1"), bad


def test_a_given_address_answers_itself_and_the_allowed_names() -> None:
    check = HostCheck.for_listen("192.0.2.7", ["Status.LAN", "10.0.0.5:8470"])
    for ok in ["192.0.2.7:8470", "status.lan:8470", "10.0.0.5"]:
        assert check.accepts(ok, "192.0.2.7"), ok
    for bad in [*FORGED, "localhost:8470", "127.0.0.1"]:
        assert not check.accepts(bad, "192.0.2.7"), bad
    assert HostCheck.for_listen("192.0.2.7", ["*"]).accepts("evil.example", "192.0.2.7")


def test_a_wildcard_answers_this_machines_names_and_the_address_reached() -> None:
    check = HostCheck.for_listen("0.0.0.0")
    for ok in ["localhost", "127.0.0.1:8470", socket.gethostname().upper(), "10.1.2.3:8470"]:
        assert check.accepts(ok, "10.1.2.3"), ok
    assert check.accepts("[::ffff:10.1.2.3]:8470", "::ffff:10.1.2.3")
    for bad in [*FORGED, "10.9.9.9"]:
        assert not check.accepts(bad, "10.1.2.3"), bad
    # No Host header: no browser sent it, so nothing was rebound.
    assert check.accepts(None, "10.1.2.3")


def test_allowed_hosts_setting_is_comma_separated() -> None:
    assert Settings(allowed_hosts=" a.lan, b.lan:80 ,").allowed_host_names == ["a.lan", "b.lan:80"]
    assert Settings().allowed_host_names == []
