"""Which address families the neighbours of `bgpexabgpconf` carry, and whether a VIP of a family
can reach a router through them (`bgp = exabgp`; check-config, start and reload ask).

lvsmon announces `VIP/32` or `VIP/128` with `next-hop self`, which ExaBGP resolves to the
session's local address. Over an IPv4 session that is an IPv4 address: invalid as the next hop of
an IPv6 route, yet ExaBGP sends it, and the router treats the update as a withdrawal (RFC 7606;
BIRD 2 counts it "ignored", the netns test saw it) while lvsmon shows the VIP announced. The same
holds the other way round (an IPv4 route over an IPv6 session needs RFC 8950's extended next hop,
which lvsmon does not ask for). ExaBGP's maintainers say the same (exabgp issues #37, #755): an
IPv6 route needs an IPv6 next hop, so an IPv6 session.

So a VIP of one family is a problem when a neighbour of the other family carries that family's
unicast routes (ExaBGP's default, without a `family` block, is every family), or when no
neighbour carries it at all. A neighbour that `inherit`s a template may take its families from
there: it is not judged (never a false error).
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass

from lvsmon.atomicfile import NotReadable, read_regular
from lvsmon.routes.exabgp import MAX_NEIGHBOURS_BYTES

_COMMENT = re.compile(r"#[^\n]*")
_TOKEN = re.compile(r"[{};]|[^\s{};]+")
_ALL = {"ipv4 unicast", "ipv6 unicast"}  # of ExaBGP's default (every family), what matters here


@dataclass(frozen=True, slots=True)
class Neighbour:
    address: str
    line: int  # of its `neighbor` in the file
    inet6: bool  # the session's family: the neighbour's address's
    families: frozenset[str] | None  # "ipv4 unicast", ...; None: unknown (a template's, say)


def neighbours(text: str) -> list[Neighbour]:
    """The top-level `neighbor ADDRESS { ... }` blocks of an ExaBGP config."""
    tokens: list[tuple[str, int]] = []
    for number, content in enumerate(_COMMENT.sub("", text).splitlines(), 1):
        tokens.extend((t, number) for t in _TOKEN.findall(content))
    found: list[Neighbour] = []
    depth = 0
    i = 0
    while i < len(tokens):
        word, line = tokens[i]
        if word == "{":
            depth += 1
        elif word == "}":
            depth = max(0, depth - 1)
        elif depth == 0 and word == "neighbor" and i + 2 < len(tokens) and tokens[i + 2][0] == "{":
            i, neighbour = _neighbour(tokens, i, line)
            found.append(neighbour)
            continue
        i += 1
    return found


def _neighbour(tokens: list[tuple[str, int]], i: int, line: int) -> tuple[int, Neighbour]:
    """The block opening at tokens[i] (`neighbor ADDRESS {`); the index after its end."""
    address = tokens[i + 1][0]
    i += 3
    depth = 1
    families: set[str] | None = None
    inherits = False
    statement: list[str] = []
    in_family = False
    while i < len(tokens) and depth > 0:
        word = tokens[i][0]
        i += 1
        if word == "{":
            depth += 1
            in_family = depth == 2 and statement == ["family"]
            if in_family and families is None:
                families = set()
            statement = []
        elif word == "}":
            depth -= 1
            in_family = False
            statement = []
        elif word == ";":
            if in_family and statement:
                families_of(statement, families if families is not None else set())
            elif depth == 1 and statement[:1] == ["inherit"]:
                inherits = True
            statement = []
        else:
            statement.append(word.lower())
    try:
        inet6 = ipaddress.ip_address(address).version == 6
    except ValueError:  # not an address ExaBGP takes: its own check says so, never a false one here
        return i, Neighbour(address, line, ":" in address, None)
    known = None if inherits else frozenset(families if families is not None else _ALL)
    return i, Neighbour(address, line, inet6, known)


def families_of(statement: list[str], into: set[str]) -> None:
    if statement == ["all"]:
        into.update(_ALL)
    elif len(statement) == 2:
        into.add(" ".join(statement))


def problem(text: str, name: str, inet6: bool) -> str | None:
    """Why a VIP of this family would not reach a router through these neighbours (None: it
    would); `name` is the file's, for the message."""
    family = "ipv6 unicast" if inet6 else "ipv4 unicast"
    vip = "IPv6" if inet6 else "IPv4"
    other = "IPv4" if inet6 else "IPv6"
    found = neighbours(text)
    for n in found:
        if n.inet6 != inet6 and n.families is not None and family in n.families:
            own = "ipv4" if n.inet6 is False else "ipv6"
            return (
                f"an {vip} VIP with bgp = exabgp: neighbor {n.address} ({name}:{n.line}) is an"
                f" {other} session, where ExaBGP's next-hop self is an {other} address, which"
                f" routers drop for an {vip} route; give that neighbor family {{ {own} unicast; }}"
                f" and add an {vip} session for the {vip} VIPs (a neighbor with an {vip} address"
                f" and local-address, family {{ {family}; }})"
            )
    if not any(n.families is None or (n.inet6 == inet6 and family in n.families) for n in found):
        return (
            f"an {vip} VIP with bgp = exabgp: no neighbor in {name} carries {family}; add an"
            f" {vip} session (a neighbor with an {vip} address and local-address, family"
            f" {{ {family}; }})"
        )
    return None


_cache: dict[tuple[str, int, int, bool], str | None] = {}


def file_problem(path: str, inet6: bool) -> str | None:
    """`problem` for the file at `path`, read once per version of it (a config with thousands
    of virtuals asks once per virtual). An unreadable file is no problem here: the config's
    check of `bgpexabgpconf` says so."""
    try:
        st = os.stat(path)
        key = (path, st.st_mtime_ns, st.st_size, inet6)
        if key not in _cache:
            text = read_regular(path, MAX_NEIGHBOURS_BYTES).decode("utf-8")
            if len(_cache) > 16:
                _cache.clear()
            _cache[key] = problem(text, path, inet6)
        return _cache[key]
    except (OSError, NotReadable, UnicodeDecodeError):
        return None
