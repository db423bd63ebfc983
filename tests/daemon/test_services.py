"""The daemon checks non-HTTP services end to end: one ldirectord.cf with pop (prober, login),
imaps (TLS task), dns over UDP (datagram task) and simpletcp (prober, half-close) against real
Dovecot, dnsmasq and socat; the in-memory IPVS table follows the servers going away."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from lvsmon.ipvs.model import ServiceKey
from realservers.base import Server
from realservers.dnsmasq import running_dnsmasq
from realservers.dovecot import running_dovecot
from realservers.socat import running_socat_echo
from tests.helpers import wait_for

from .conftest import Running, start

POP = ServiceKey.inet("tcp", "127.0.0.101", 110)
IMAPS = ServiceKey.inet("tcp", "127.0.0.102", 993)
DNS = ServiceKey.inet("udp", "127.0.0.103", 53)
ECHO = ServiceKey.inet("tcp", "127.0.0.104", 7)


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Server]]:
    with (
        running_dovecot() as dovecot,
        running_dnsmasq() as dnsmasq,
        running_socat_echo(udp=False) as echo,
    ):
        yield {"dovecot": dovecot, "dnsmasq": dnsmasq, "echo": echo}


def config(s: dict[str, Server]) -> str:
    dovecot, dnsmasq, echo = s["dovecot"], s["dnsmasq"], s["echo"]
    return (
        "checktimeout=2\ncheckinterval=1\nquiescent=no\n"
        # the service comes from the virtual's port, as in most published files
        f"virtual=127.0.0.101:110\n\treal=127.0.0.1:{dovecot.ports['pop3']} masq\n"
        '\tlogin="lvsmon"\n\tpasswd="secret"\n'
        f"virtual=127.0.0.102:993\n\treal=127.0.0.1:{dovecot.ports['imaps']} masq\n"
        '\tlogin="lvsmon"\n\tpasswd="secret"\n'
        f"virtual=127.0.0.103:53\n\tprotocol=udp\n\treal=127.0.0.1:{dnsmasq.ports['dns']} masq\n"
        '\trequest="www.lvsmon.test"\n\treceive="192.0.2.10"\n'
        f"virtual=127.0.0.104:7\n\tservice=simpletcp\n\treal=127.0.0.1:{echo.ports['echo']} masq\n"
        '\trequest="ping\\n"\n\treceive="^ping"\n'
    )


def reals(r: Running, key: ServiceKey) -> set[tuple[str, int]]:
    table = r.daemon.engine.actual or {}
    if key not in table:
        return set()
    return {(d.address, d.port) for d, c in table[key].dests.items() if c.weight > 0}


async def test_every_service_is_checked_by_the_daemon(
    servers: dict[str, Server], tmp_path: Path, stopper: list[Running]
) -> None:
    cf = tmp_path / "services.cf"
    cf.write_text(config(servers))
    r = await start(cf)
    stopper.append(r)
    dovecot, dnsmasq, echo = servers["dovecot"], servers["dnsmasq"], servers["echo"]
    await wait_for(
        lambda: (
            reals(r, POP) == {("127.0.0.1", dovecot.ports["pop3"])}
            and reals(r, IMAPS) == {("127.0.0.1", dovecot.ports["imaps"])}
            and reals(r, DNS) == {("127.0.0.1", dnsmasq.ports["dns"])}
            and reals(r, ECHO) == {("127.0.0.1", echo.ports["echo"])}
        ),
        within=15,
    )
    # a frozen dnsmasq fails its check at the deadline; the others stay in
    with dnsmasq.frozen():
        await wait_for(lambda: not reals(r, DNS), within=15)
        assert reals(r, POP) and reals(r, IMAPS) and reals(r, ECHO)
    await wait_for(lambda: bool(reals(r, DNS)), within=15)
    # Dovecot gone: pop and imaps reals leave the table, the rest stays
    dovecot.stop()
    await wait_for(lambda: not reals(r, POP) and not reals(r, IMAPS), within=15)
    await asyncio.sleep(0)
    assert reals(r, DNS) and reals(r, ECHO)
