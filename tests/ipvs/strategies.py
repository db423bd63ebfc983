"""Hypothesis strategies for IPVS tables: small pools of keys, so that tables generated
independently overlap (the interesting case for a diff)."""

from __future__ import annotations

from hypothesis import strategies as st

from lvsmon.ipvs.diff import kernel_dests
from lvsmon.ipvs.model import (
    DestConf,
    DestKey,
    Family,
    Forward,
    Proto,
    Service,
    ServiceConf,
    ServiceKey,
    Table,
    kernel_dest_port,
)
from lvsmon.ipvs.rules import canonical_service_conf

SERVICE_KEYS = [
    ServiceKey.inet(Proto.TCP, "10.0.0.1", 80),
    ServiceKey.inet(Proto.UDP, "10.0.0.1", 53),
    ServiceKey.inet(Proto.SCTP, "10.0.0.2", 9999),
    ServiceKey.inet(Proto.TCP, "2001:db8::1", 443),
    ServiceKey.fwm(7),
    ServiceKey.fwm(8, Family.INET6),
]
V4_HOSTS = ["10.0.1.1", "10.0.1.2", "10.0.1.3", "192.168.5.9"]
V6_HOSTS = ["2001:db8:1::1", "2001:db8:1::2", "2001:db8:1::3"]
SCHEDULERS = ["rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh"]
FLAGS = {"sh": ["sh-fallback", "sh-port"], "mh": ["mh-fallback", "mh-port"]}


@st.composite
def service_confs(draw: st.DrawFn, key: ServiceKey) -> ServiceConf:
    scheduler = draw(st.sampled_from(SCHEDULERS))
    flags = draw(st.frozensets(st.sampled_from(FLAGS[scheduler]))) if scheduler in FLAGS else None
    persistent = draw(st.none() | st.sampled_from([1, 60, 300, 360, 86400]))
    netmask = None
    if persistent is not None:
        if key.family is Family.INET6:
            netmask = draw(st.none() | st.sampled_from(["64", "96", "128"]))
        else:
            netmask = draw(st.none() | st.sampled_from(["255.255.255.0", "255.255.0.0", "24"]))
    ops = draw(st.booleans()) if key.is_fwmark or key.protocol is Proto.UDP else False
    return ServiceConf(scheduler, flags or frozenset(), persistent, netmask, ops)


@st.composite
def dest_confs(draw: st.DrawFn) -> DestConf:
    upper = draw(st.sampled_from([0, 0, 10, 100]))
    lower = draw(st.integers(0, upper)) if upper else 0
    return DestConf(
        forward=draw(st.sampled_from(list(Forward))),
        weight=draw(st.sampled_from([0, 1, 2, 5, 100])),
        upper=upper,
        lower=lower,
    )


@st.composite
def dests(draw: st.DrawFn, key: ServiceKey) -> dict[DestKey, DestConf]:
    hosts = V6_HOSTS if key.family is Family.INET6 else V4_HOSTS
    ports = [0] if key.is_fwmark else [key.port, 8080]
    out: dict[DestKey, DestConf] = {}
    for host in draw(st.lists(st.sampled_from(hosts), unique=True, max_size=len(hosts))):
        conf = draw(dest_confs())
        # As the kernel stores them: gate and ipip take the virtual port.
        dest = kernel_dest_port(key, DestKey(host, draw(st.sampled_from(ports))), conf.forward)
        out.setdefault(dest, conf)
    return out


@st.composite
def tables(draw: st.DrawFn) -> Table:
    keys = draw(st.lists(st.sampled_from(SERVICE_KEYS), unique=True))
    return {key: Service(draw(service_confs(key)), draw(dests(key))) for key in keys}


def as_kernel_stores(table: Table) -> Table:
    """The table a dump would show after writing `table`: canonical confs, forced ports."""
    return {
        key: Service(canonical_service_conf(key, svc.conf), kernel_dests(key, svc.dests))
        for key, svc in table.items()
    }


def kernel_tables() -> st.SearchStrategy[Table]:
    """Tables as a dump returns them (for `actual`)."""
    return tables().map(as_kernel_stores)


def managed_sets() -> st.SearchStrategy[frozenset[ServiceKey]]:
    return st.frozensets(st.sampled_from(SERVICE_KEYS))
