"""Where a webhook may send: public addresses only, unless WEBHOOK_ALLOW_PRIVATE (server-side
request forgery: an admin key must not turn the service into a client of its own network, its
database, its cloud's metadata service at 169.254.169.254).

A target is checked when the endpoint is created and again before every delivery, since what a
name resolves to can change. The delivery then connects to the very address checked (the URL's
host replaced by it, the name kept for `Host` and for TLS's server name and certificate check),
so that a name resolving to a public address for the check and to a private one a moment later
(DNS rebinding) gains nothing. Every address the name has must pass, not just the one used.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Final
from urllib.parse import SplitResult, urlsplit, urlunsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_PORTS: Final = {"http": 80, "https": 443}
# NAT64's well-known prefix: the IPv4 address it reaches is the last 32 bits.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
ALLOW_HINT: Final = "WEBHOOK_ALLOW_PRIVATE=true allows it"


class TargetRefusedError(ValueError):
    """The URL cannot be delivered to: not http(s), no host, a host that does not resolve, or
    one that resolves to an address that is not public."""


@dataclass(frozen=True, slots=True)
class Target:
    """What a delivery requests: `url` with the checked address in place of the host, `host`
    for the Host header, `server_name` for TLS (https only)."""

    url: str
    host: str
    server_name: str | None
    address: str


def check_url(url: str) -> SplitResult:
    """The URL's parts, once it is http or https with a host and a valid port."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a port out of range or not a number)
    except ValueError as error:
        raise TargetRefusedError(f"not a valid URL: {error}") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise TargetRefusedError("only http and https URLs can be delivered to")
    if not parts.hostname:
        raise TargetRefusedError("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise TargetRefusedError("the URL must hold no user name or password")
    return parts


def resolve(url: str, *, allow_private: bool) -> Target:
    """The address to deliver `url` to, after checking every address its host resolves to."""
    parts = check_url(url)
    host = parts.hostname
    assert host is not None
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise TargetRefusedError(f"{host} does not resolve: {error}") from None
    addresses = list(dict.fromkeys(_address(str(info[4][0])) for info in found))
    if not addresses:
        raise TargetRefusedError(f"{host} does not resolve")
    if not allow_private:
        for address in addresses:
            if reason := not_public(address):
                shown = "" if host == str(address) else f"{host} resolves to "
                raise TargetRefusedError(
                    f"{shown}{address}, a {reason} address: refused ({ALLOW_HINT})"
                )
    address = addresses[0]
    literal = f"[{address}]" if address.version == 6 else str(address)
    pinned = urlunsplit((parts.scheme, f"{literal}:{port}", parts.path or "/", parts.query, ""))
    return Target(
        url=pinned,
        host=parts.netloc,
        server_name=host if parts.scheme == "https" else None,
        address=str(address),
    )


def _address(text: str) -> IPAddress:
    """getaddrinfo's address; an IPv6 zone (`fe80::1%eth0`) dropped."""
    return ipaddress.ip_address(text.partition("%")[0])


def not_public(address: IPAddress) -> str | None:
    """Why a delivery may not go to `address` (None: it may): loopback, private, link-local,
    multicast, or otherwise not global, also when carried inside an IPv6 address (IPv4-mapped,
    6to4, Teredo, NAT64)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if address.teredo is not None:
            embedded = address.teredo[1]
        if address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and (reason := not_public(embedded)):
            return reason
    for reason, flag in (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("private", address.is_private),
    ):
        if flag:
            return reason
    return None if address.is_global else "non-global"
