"""Which of our addresses to tell peers, and which of a peer's addresses to dial (pure).

A node listening on `/ip4/0.0.0.0/tcp/4001` can be reached at each of its interfaces' addresses,
never at 0.0.0.0 itself; a node behind NAT is reached at the public address its owner announces.
What a peer tells us is its own word: a dial list is capped, checked and deduplicated before a
single connection is tried, so a peer advertising garbage or thousands of addresses costs little.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable

import multiaddr
from multiaddr.utils import get_network_addrs

# At most this many of a peer's addresses are dialled; an honest node has a handful.
MAX_DIAL_ADDRS = 8
# At most this many of our own addresses go into an advert (each interface, plus `announce`).
MAX_ADVERTISED_ADDRS = 16

_IP_PROTOCOLS = ("ip4", "ip6")
_DNS_PROTOCOLS = ("dns", "dns4", "dns6")

InterfaceIps = Callable[[int], list[str]]


def interface_ips(version: int) -> list[str]:
    """This machine's addresses of IP `version` (4 or 6), loopback included."""
    try:
        found = list(get_network_addrs(version) or [])
    except Exception:
        found = []
    loopback = "127.0.0.1" if version == 4 else "::1"
    return [*found, loopback] if loopback not in found else found


def advertised_addrs(
    transport_addrs: Iterable[multiaddr.Multiaddr],
    announce: Iterable[str],
    *,
    ips: InterfaceIps = interface_ips,
) -> list[multiaddr.Multiaddr]:
    """The addresses to tell peers: `announce` first, then every concrete address we listen on,
    with a wildcard listener expanded to each interface; loopback last, never 0.0.0.0 or ::."""
    chosen: list[multiaddr.Multiaddr] = [multiaddr.Multiaddr(a) for a in announce]
    loopback: list[multiaddr.Multiaddr] = []
    for addr in transport_addrs:
        for concrete in _expand(addr, ips):
            ip = _ip_of(concrete)
            (loopback if ip is not None and ip.is_loopback else chosen).append(concrete)
    return _unique([*chosen, *loopback])[:MAX_ADVERTISED_ADDRS]


def dial_candidates(addrs: Iterable[str], peer_id: str) -> list[str]:
    """The addresses of `peer_id` worth dialling, each ending in /p2p/<peer_id>, at most
    `MAX_DIAL_ADDRS`: malformed, unspecified (0.0.0.0, ::), multicast, non-TCP and other peers'
    addresses are dropped."""
    suffix = f"/p2p/{peer_id}"
    picked: list[str] = []
    for text in addrs:
        if len(picked) >= MAX_DIAL_ADDRS:
            break
        full = _dialable(text, peer_id)
        if full is not None and full not in picked:
            picked.append(full if full.endswith(suffix) else full + suffix)
    return picked


def _dialable(text: str, peer_id: str) -> str | None:
    if len(text) > 512:
        return None
    try:
        addr = multiaddr.Multiaddr(text)
        names = [p.name for p in addr.protocols()]
        named_peer = addr.value_for_protocol("p2p") if "p2p" in names else None
    except Exception:
        return None
    if "tcp" not in names or not any(n in names for n in (*_IP_PROTOCOLS, *_DNS_PROTOCOLS)):
        return None
    if named_peer is not None and named_peer != peer_id:
        return None
    ip = _ip_of(addr)
    if ip is not None and (ip.is_unspecified or ip.is_multicast or _is_broadcast(ip)):
        return None
    if str(addr.value_for_protocol("tcp")) == "0":
        return None
    return str(addr)


def _expand(addr: multiaddr.Multiaddr, ips: InterfaceIps) -> list[multiaddr.Multiaddr]:
    ip = _ip_of(addr)
    if ip is None or not ip.is_unspecified:
        return [addr]
    protocol = "ip4" if ip.version == 4 else "ip6"
    rest = str(addr).split("/", 3)[3]  # what follows /ip4/0.0.0.0/
    return [
        multiaddr.Multiaddr(f"/{protocol}/{concrete}/{rest}")
        for concrete in ips(ip.version)
        # A link-local address needs a zone to be dialled; no peer can use it from an advert.
        if not ipaddress.ip_address(concrete).is_link_local
    ]


def _ip_of(addr: multiaddr.Multiaddr) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    names = [p.name for p in addr.protocols()]
    for protocol in _IP_PROTOCOLS:
        if protocol in names:
            try:
                return ipaddress.ip_address(addr.value_for_protocol(protocol))
            except ValueError:
                return None
    return None


def _is_broadcast(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return ip.version == 4 and str(ip) == "255.255.255.255"


def _unique(addrs: list[multiaddr.Multiaddr]) -> list[multiaddr.Multiaddr]:
    seen: set[str] = set()
    out = []
    for addr in addrs:
        if str(addr) not in seen:
            seen.add(str(addr))
            out.append(addr)
    return out
