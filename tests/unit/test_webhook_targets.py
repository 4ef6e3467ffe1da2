"""Where a webhook may send (server-side request forgery), and when a failing one is tried
again: public addresses only, every address of a name checked, the delivery pinned to the
address checked; backoff doubling from about a second, capped, jittered."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest

from docingest.changes.webhooks.delivery import backoff
from docingest.changes.webhooks.targets import TargetRefusedError, not_public, resolve


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("169.254.169.254", "link-local"),  # a cloud's metadata service
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("100.64.0.1", "non-global"),  # carrier-grade NAT
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("93.184.215.14", None),
        ("2606:4700::1111", None),
    ],
)
def test_only_global_addresses_are_public(address: str, reason: str | None) -> None:
    assert not_public(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/x", "only http and https"),
        ("http:///path", "no host"),
        ("http://user:pw@example.com/", "no user name or password"),
        ("http://example.com:99999/", "not a valid URL"),
        ("http://127.0.0.1:8080/hook", "127.0.0.1, a loopback address: refused"),
        ("http://localhost/hook", "localhost resolves to"),
        ("http://[::1]/hook", "a loopback address"),
        ("http://169.254.169.254/latest/meta-data", "a link-local address"),
        ("http://no-such-host.invalid/", "does not resolve"),
    ],
)
def test_a_target_that_leads_nowhere_public_is_refused(url: str, message: str) -> None:
    with pytest.raises(TargetRefusedError, match=message):
        resolve(url, allow_private=False)


def _resolving_to(monkeypatch: pytest.MonkeyPatch, *addresses: str) -> None:
    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        family = socket.AF_INET6
        return [
            (socket.AF_INET if "." in a else family, socket.SOCK_STREAM, 6, "", (a, port))
            for a in addresses
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_a_name_with_one_private_address_among_public_ones_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A delivery could go to any of them: every one must be public."""
    _resolving_to(monkeypatch, "93.184.215.14", "10.0.0.5")
    with pytest.raises(TargetRefusedError, match=r"hooks\.example\.com resolves to 10\.0\.0\.5"):
        resolve("https://hooks.example.com/in", allow_private=False)


def test_the_delivery_goes_to_the_address_checked_under_the_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _resolving_to(monkeypatch, "93.184.215.14")
    target = resolve("https://hooks.example.com/in?team=a", allow_private=False)
    assert target.url == "https://93.184.215.14:443/in?team=a"
    assert (target.host, target.server_name) == ("hooks.example.com", "hooks.example.com")
    _resolving_to(monkeypatch, "2606:4700::1111")
    target = resolve("http://hooks.example.com:8080", allow_private=False)
    assert target.url == "http://[2606:4700::1111]:8080/"
    assert (target.host, target.server_name) == ("hooks.example.com:8080", None)


def test_private_targets_are_allowed_when_the_setting_says_so() -> None:
    target = resolve("http://127.0.0.1:8080/hook", allow_private=True)
    assert target.url == "http://127.0.0.1:8080/hook"
    assert resolve("http://localhost:9/", allow_private=True).address in {"127.0.0.1", "::1"}
    with pytest.raises(TargetRefusedError, match="does not resolve"):
        resolve("http://no-such-host.invalid/", allow_private=True)


def test_backoff_doubles_from_about_a_second_up_to_its_cap_with_jitter() -> None:
    for attempts, ceiling in ((1, 1), (2, 2), (3, 4), (9, 256), (10, 300), (50, 300)):
        waits = [backoff(attempts, 1.0, 300.0) for _ in range(200)]
        assert all(ceiling / 2 <= wait <= ceiling for wait in waits), (attempts, waits[:5])
        assert len(set(waits)) > 100  # jittered
    assert backoff(10_000, 1.0, 300.0) <= 300.0
