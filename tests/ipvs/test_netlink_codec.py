"""The netlink codec without a kernel: what it encodes is read back by pyroute2's own IPVS message
class (``ipvsmsg``, an independent reading of include/uapi/linux/ip_vs.h), the kernel's reply is
built from those attributes by pyroute2, and the codec decodes that reply into the same service,
destination or sync daemon it started from (as the kernel stores it)."""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyroute2.netlink.generic.ipvs import ipvsmsg

from lvsmon.ipvs import netlink_codec as codec
from lvsmon.ipvs.model import (
    DestConf,
    DestKey,
    DestStats,
    Family,
    Forward,
    Proto,
    Service,
    ServiceConf,
    ServiceKey,
    Table,
    canonical_address,
    kernel_dest_port,
)
from lvsmon.ipvs.ops import (
    AddDest,
    AddService,
    DeleteDest,
    DeleteService,
    EditDest,
    EditService,
)
from lvsmon.ipvs.rules import (
    MAX_FWMARK,
    MAX_PERSISTENT,
    MAX_THRESHOLD,
    MAX_WEIGHT,
    SCHED_FLAGS,
    SCHEDULERS,
    InvalidConf,
    canonical_service_conf,
)
from lvsmon.ipvs.sync import IFNAME_MAX, MAXLEN_MAX, SYNCID_MAX, SyncDaemon, SyncState
from tests.ipvs.strategies import as_kernel_stores, tables

_NLMSG_HDR = struct.Struct("=IHHII")
_FAMILY_ID = 0x20  # any: the generic netlink family id is the socket's business, not the codec's


def read(request: codec.Request) -> Any:
    """The request as pyroute2 parses it (a netlink header in front, as the socket adds it)."""
    msg = ipvsmsg(
        _NLMSG_HDR.pack(_NLMSG_HDR.size + len(request.body), _FAMILY_ID, 0, 1, 0) + request.body
    )
    msg.decode()
    return msg


def reply(cmd: int, attrs: list[tuple[str, Any]]) -> bytes:
    """A dump reply as the kernel sends it, built by pyroute2: the generic netlink message that
    follows the netlink header."""
    msg = ipvsmsg()
    msg["cmd"] = cmd
    msg["version"] = codec.GENL_VERSION
    msg["attrs"] = attrs
    msg.encode()
    data: bytes = msg.data
    return data[_NLMSG_HDR.size :]


def attrs_of(nla: Any) -> dict[str, Any]:
    return dict(nla["attrs"])


# ---- strategies: the whole range the rules accept ----------------------------------------------


@st.composite
def service_keys(draw: st.DrawFn) -> ServiceKey:
    family = draw(st.sampled_from(list(Family)))
    if draw(st.booleans()):
        return ServiceKey.fwm(draw(st.integers(1, MAX_FWMARK)), family)
    address = draw(st.ip_addresses(v=4 if family is Family.INET else 6))
    return ServiceKey.inet(
        draw(st.sampled_from(list(Proto))), str(address), draw(st.integers(1, 65535))
    )


@st.composite
def service_confs(draw: st.DrawFn, key: ServiceKey) -> ServiceConf:
    scheduler = draw(st.sampled_from(sorted(SCHEDULERS)))
    flags = draw(st.frozensets(st.sampled_from(sorted(SCHED_FLAGS.get(scheduler, {"-": 0})))))
    persistent = draw(st.none() | st.integers(1, MAX_PERSISTENT))
    netmask = None
    if key.family is Family.INET6:
        netmask = draw(st.none() | st.integers(1, 128).map(str))
    else:
        prefixes = st.integers(0, 32)
        netmask = draw(
            st.none()
            | prefixes.map(str)
            | prefixes.map(lambda n: str(ipaddress.IPv4Network(f"0.0.0.0/{n}").netmask))
        )
    return ServiceConf(
        scheduler=scheduler,
        sched_flags=flags if scheduler in SCHED_FLAGS else frozenset(),
        persistent=persistent,
        netmask=netmask,
        ops=draw(st.booleans()) if key.is_fwmark or key.protocol is Proto.UDP else False,
    )


@st.composite
def services(draw: st.DrawFn) -> tuple[ServiceKey, ServiceConf]:
    key = draw(service_keys())
    return key, draw(service_confs(key))


@st.composite
def dest_confs(draw: st.DrawFn) -> DestConf:
    upper = draw(st.integers(0, MAX_THRESHOLD))
    return DestConf(
        forward=draw(st.sampled_from(list(Forward))),
        weight=draw(st.integers(0, MAX_WEIGHT)),
        upper=upper,
        lower=draw(st.integers(0, upper)),
    )


@st.composite
def dests(draw: st.DrawFn) -> tuple[ServiceKey, DestKey, DestConf]:
    key = draw(service_keys())
    address = draw(st.ip_addresses(v=4 if key.family is Family.INET else 6))
    return key, DestKey.of(str(address), draw(st.integers(0, 65535))), draw(dest_confs())


counters = st.integers(0, 2**32 - 1)


# ---- services ---------------------------------------------------------------------------------


def key_attrs_match(nla: Any, key: ServiceKey) -> None:
    """pyroute2 reads the service's identity back from the attributes the codec wrote."""
    attrs = attrs_of(nla)
    assert attrs["IPVS_SVC_ATTR_AF"] == codec.AF[key.family]
    if key.is_fwmark:
        assert attrs["IPVS_SVC_ATTR_FWMARK"] == key.fwmark
        assert not {"IPVS_SVC_ATTR_PROTOCOL", "IPVS_SVC_ATTR_ADDR", "IPVS_SVC_ATTR_PORT"} & set(
            attrs
        )
    else:
        assert key.protocol is not None
        assert attrs["IPVS_SVC_ATTR_PROTOCOL"] == codec.PROTO[key.protocol]
        assert canonical_address(attrs["IPVS_SVC_ATTR_ADDR"]) == key.address
        assert attrs["IPVS_SVC_ATTR_PORT"] == key.port
        assert "IPVS_SVC_ATTR_FWMARK" not in attrs


@given(services(), st.booleans())
def test_a_service_round_trips(service: tuple[ServiceKey, ServiceConf], edit: bool) -> None:
    key, conf = service
    op = EditService(key, conf) if edit else AddService(key, conf)
    msg = read(codec.encode_op(op))
    assert msg["cmd"] == (codec.CMD_SET_SERVICE if edit else codec.CMD_NEW_SERVICE)
    assert msg["version"] == codec.GENL_VERSION
    nla = msg.get_attr("IPVS_CMD_ATTR_SERVICE")
    key_attrs_match(nla, key)
    attrs = attrs_of(nla)
    assert attrs["IPVS_SVC_ATTR_SCHED_NAME"] == conf.scheduler
    assert attrs["IPVS_SVC_ATTR_FLAGS"]["mask"] == 0xFFFFFFFF  # every flag is set or cleared
    assert bool(attrs["IPVS_SVC_ATTR_FLAGS"]["flags"] & codec.F_PERSISTENT) == (
        conf.persistent is not None
    )
    assert attrs["IPVS_SVC_ATTR_TIMEOUT"] == (conf.persistent or 0)

    decoded = codec.service_from(reply(codec.CMD_NEW_SERVICE, [("IPVS_CMD_ATTR_SERVICE", nla)]))
    assert decoded == (key, canonical_service_conf(key, conf))


@given(service_keys())
def test_a_service_delete_carries_only_the_key(key: ServiceKey) -> None:
    msg = read(codec.encode_op(DeleteService(key)))
    assert msg["cmd"] == codec.CMD_DEL_SERVICE
    nla = msg.get_attr("IPVS_CMD_ATTR_SERVICE")
    key_attrs_match(nla, key)
    assert set(attrs_of(nla)) <= {
        "IPVS_SVC_ATTR_AF",
        "IPVS_SVC_ATTR_PROTOCOL",
        "IPVS_SVC_ATTR_ADDR",
        "IPVS_SVC_ATTR_PORT",
        "IPVS_SVC_ATTR_FWMARK",
    }
    assert msg.get_attr("IPVS_CMD_ATTR_DEST") is None


def test_port_zero_only_with_persistence() -> None:
    key = ServiceKey.inet(Proto.TCP, "192.0.2.1", 0)
    conf = ServiceConf("rr", persistent=300, netmask="255.255.255.0")
    nla = read(codec.encode_op(AddService(key, conf))).get_attr("IPVS_CMD_ATTR_SERVICE")
    assert codec.service_from(reply(1, [("IPVS_CMD_ATTR_SERVICE", nla)])) == (key, conf)
    with pytest.raises(InvalidConf, match="port 0 is only allowed for a persistent service"):
        codec.encode_op(AddService(key, ServiceConf("rr")))


# ---- destinations -----------------------------------------------------------------------------


@given(dests(), st.booleans(), counters, counters)
def test_a_destination_round_trips(
    dest: tuple[ServiceKey, DestKey, DestConf], edit: bool, active: int, inactive: int
) -> None:
    key, real, conf = dest
    op = EditDest(key, real, conf) if edit else AddDest(key, real, conf)
    msg = read(codec.encode_op(op))
    assert msg["cmd"] == (codec.CMD_SET_DEST if edit else codec.CMD_NEW_DEST)
    key_attrs_match(msg.get_attr("IPVS_CMD_ATTR_SERVICE"), key)
    stored = kernel_dest_port(key, real, conf.forward)
    attrs = attrs_of(msg.get_attr("IPVS_CMD_ATTR_DEST"))
    assert canonical_address(attrs["IPVS_DEST_ATTR_ADDR"]) == stored.address
    assert attrs["IPVS_DEST_ATTR_PORT"] == stored.port
    assert attrs["IPVS_DEST_ATTR_ADDR_FAMILY"] == codec.AF[key.family]
    assert attrs["IPVS_DEST_ATTR_FWD_METHOD"] == codec.FORWARD_TO_KERNEL[conf.forward]
    assert (attrs["IPVS_DEST_ATTR_WEIGHT"], attrs["IPVS_DEST_ATTR_U_THRESH"]) == (
        conf.weight,
        conf.upper,
    )
    assert attrs["IPVS_DEST_ATTR_L_THRESH"] == conf.lower

    # The kernel answers a GET_DEST with the same settings and its counters (and more that the
    # model does not read, such as the persistent connection count).
    answer = [
        *attrs.items(),
        ("IPVS_DEST_ATTR_ACTIVE_CONNS", active),
        ("IPVS_DEST_ATTR_INACT_CONNS", inactive),
        ("IPVS_DEST_ATTR_PERSIST_CONNS", 7),
    ]
    decoded = codec.dest_from(
        key, reply(codec.CMD_NEW_DEST, [("IPVS_CMD_ATTR_DEST", {"attrs": answer})]), {}
    )
    assert decoded == (stored, conf, DestStats(active, inactive))


@given(dests())
def test_a_destination_delete_carries_only_the_keys(
    dest: tuple[ServiceKey, DestKey, DestConf],
) -> None:
    key, real, _ = dest
    msg = read(codec.encode_op(DeleteDest(key, real)))
    assert msg["cmd"] == codec.CMD_DEL_DEST
    key_attrs_match(msg.get_attr("IPVS_CMD_ATTR_SERVICE"), key)
    nla = msg.get_attr("IPVS_CMD_ATTR_DEST")
    assert set(attrs_of(nla)) == {
        "IPVS_DEST_ATTR_ADDR",
        "IPVS_DEST_ATTR_PORT",
        "IPVS_DEST_ATTR_ADDR_FAMILY",
    }
    decoded = codec.dest_from(key, reply(codec.CMD_DEL_DEST, [("IPVS_CMD_ATTR_DEST", nla)]), {})
    assert decoded is not None and decoded[0] == real  # a delete names the key as stored


# ---- a whole table, as the backend dumps it ---------------------------------------------------


@given(tables())
def test_a_table_written_op_by_op_dumps_as_the_kernel_stores_it(table: Table) -> None:
    dumped: Table = {}
    for key, svc in table.items():
        nla = read(codec.encode_op(AddService(key, svc.conf))).get_attr("IPVS_CMD_ATTR_SERVICE")
        decoded = codec.service_from(reply(codec.CMD_NEW_SERVICE, [("IPVS_CMD_ATTR_SERVICE", nla)]))
        assert decoded is not None
        dumped[decoded[0]] = Service(decoded[1])
        for real, conf in svc.dests.items():
            msg = read(codec.encode_op(AddDest(key, real, conf)))
            dest_nla = msg.get_attr("IPVS_CMD_ATTR_DEST")
            found = codec.dest_from(
                key, reply(codec.CMD_NEW_DEST, [("IPVS_CMD_ATTR_DEST", dest_nla)]), {}
            )
            assert found is not None
            dumped[key].dests[found[0]] = found[1]
    assert dumped == as_kernel_stores(table)


# ---- dump requests ------------------------------------------------------------------------------


@given(service_keys())
def test_dump_requests(key: ServiceKey) -> None:
    services = read(codec.dump_services())
    assert (services["cmd"], services["attrs"]) == (codec.CMD_GET_SERVICE, [])
    dests_of = read(codec.dump_dests(key))
    assert dests_of["cmd"] == codec.CMD_GET_DEST
    key_attrs_match(dests_of.get_attr("IPVS_CMD_ATTR_SERVICE"), key)
    daemons = read(codec.dump_daemons())
    assert (daemons["cmd"], daemons["attrs"]) == (codec.CMD_GET_DAEMON, [])


# ---- what a dump may hold that the codec leaves out or reads its own way -------------------------


def svc_reply(**attrs: Any) -> bytes:
    return reply(codec.CMD_NEW_SERVICE, [("IPVS_CMD_ATTR_SERVICE", {"attrs": list(attrs.items())})])


def dest_reply(**attrs: Any) -> bytes:
    return reply(codec.CMD_NEW_DEST, [("IPVS_CMD_ATTR_DEST", {"attrs": list(attrs.items())})])


V4 = {"IPVS_SVC_ATTR_AF": 2, "IPVS_SVC_ATTR_ADDR": "192.0.2.1", "IPVS_SVC_ATTR_PORT": 80}


def test_a_protocol_or_family_the_model_does_not_know_is_left_out() -> None:
    assert codec.service_from(svc_reply(**V4, IPVS_SVC_ATTR_PROTOCOL=1)) is None  # icmp
    assert codec.service_from(svc_reply(IPVS_SVC_ATTR_AF=7, IPVS_SVC_ATTR_FWMARK=1)) is None
    assert codec.service_from(reply(codec.CMD_NEW_SERVICE, [])) is None  # no service in it
    assert codec.dest_from(ServiceKey.fwm(1), reply(codec.CMD_NEW_DEST, []), {}) is None


def test_persistence_settings_count_only_with_the_persistent_flag() -> None:
    base = {**V4, "IPVS_SVC_ATTR_PROTOCOL": 6, "IPVS_SVC_ATTR_SCHED_NAME": "wlc"}
    off = svc_reply(
        **base,
        IPVS_SVC_ATTR_FLAGS={"flags": 0, "mask": 0xFFFFFFFF},
        IPVS_SVC_ATTR_TIMEOUT=300,
        IPVS_SVC_ATTR_NETMASK="255.255.255.0",
    )
    assert codec.service_from(off) == (ServiceKey.inet("tcp", "192.0.2.1", 80), ServiceConf("wlc"))
    full = svc_reply(
        **base,
        IPVS_SVC_ATTR_FLAGS={"flags": codec.F_PERSISTENT, "mask": 0xFFFFFFFF},
        IPVS_SVC_ATTR_TIMEOUT=300,
        IPVS_SVC_ATTR_NETMASK="255.255.255.255",
    )
    decoded = codec.service_from(full)
    assert decoded is not None and decoded[1] == ServiceConf("wlc", persistent=300)


def test_flag_bits_of_a_scheduler_without_flag_names() -> None:
    reply_bytes = svc_reply(
        IPVS_SVC_ATTR_AF=10,
        IPVS_SVC_ATTR_FWMARK=9,
        IPVS_SVC_ATTR_SCHED_NAME="rr",
        IPVS_SVC_ATTR_FLAGS={"flags": 0x08 | 0x20, "mask": 0xFFFFFFFF},
    )
    decoded = codec.service_from(reply_bytes)
    assert decoded is not None
    assert decoded[0] == ServiceKey.fwm(9, Family.INET6)
    assert decoded[1].sched_flags == {"flag-1", "flag-3"}


REAL = {
    "IPVS_DEST_ATTR_ADDR": "192.0.2.10",
    "IPVS_DEST_ATTR_PORT": 80,
    "IPVS_DEST_ATTR_ADDR_FAMILY": 2,
    "IPVS_DEST_ATTR_WEIGHT": 1,
}


def test_local_node_reads_back_as_written_or_as_gate() -> None:
    svc = ServiceKey.inet("tcp", "192.0.2.1", 80)
    local = dest_reply(**REAL, IPVS_DEST_ATTR_FWD_METHOD=codec.FWD_LOCALNODE)
    found = codec.dest_from(svc, local, {})
    assert found is not None and found[1].forward is Forward.GATE
    found = codec.dest_from(svc, local, {DestKey("192.0.2.10", 80): Forward.MASQ})
    assert found is not None and found[1].forward is Forward.MASQ
    # Only the low bits are the method.
    tunnel = dest_reply(**REAL, IPVS_DEST_ATTR_FWD_METHOD=0x0100 | 2)
    found = codec.dest_from(svc, tunnel, {})
    assert found is not None and found[1].forward is Forward.IPIP


def test_a_destination_without_its_family_takes_the_services() -> None:
    svc = ServiceKey.inet("tcp", "2001:db8::1", 80)
    raw = codec.parse_attrs(
        codec.encode_op(AddDest(svc, DestKey.of("2001:db8::10", 80), DestConf())).body,
        codec.GENL_HDR.size,
    )[codec.CMD_ATTR_DEST]
    attrs = codec.parse_attrs(raw)
    del attrs[codec.DEST_ADDR_FAMILY]
    dest, conf, stats = codec.decode_dest(svc, attrs, {})
    assert (dest, conf, stats) == (DestKey("2001:db8::10", 80), DestConf(), DestStats())


# ---- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "words"),
    [
        (AddService(ServiceKey.fwm(1), ServiceConf("bogus")), "unknown scheduler 'bogus'"),
        (
            EditService(ServiceKey.fwm(1), ServiceConf("rr", frozenset({"sh-port"}))),
            "scheduler flag 'sh-port' does not apply to scheduler 'rr'",
        ),
        (
            AddDest(ServiceKey.fwm(1), DestKey.of("192.0.2.1", 0), DestConf(weight=-1)),
            "weight out of range",
        ),
        (
            EditDest(ServiceKey.fwm(1), DestKey.of("2001:db8::1", 0), DestConf()),
            "is not inet like service",
        ),
    ],
)
def test_what_the_kernel_would_refuse_is_refused_here(op: Any, words: str) -> None:
    with pytest.raises(InvalidConf, match=words):
        codec.encode_op(op)


def test_not_an_op() -> None:
    with pytest.raises(InvalidConf, match="not an IPVS operation"):
        codec.encode_op("add everything")  # type: ignore[arg-type]


# ---- sync daemons -------------------------------------------------------------------------------


@st.composite
def sync_daemons(draw: st.DrawFn) -> SyncDaemon:
    v4_groups = st.integers(0xE0000000, 0xEFFFFFFF).map(lambda n: str(ipaddress.IPv4Address(n)))
    v6_groups = st.integers(0xFF << 120, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))
    return SyncDaemon(
        state=draw(st.sampled_from(list(SyncState))),
        interface=draw(
            st.text("abcdefghijklmnopqrstuvwxyz0123456789.-_", min_size=1, max_size=IFNAME_MAX)
        ),
        syncid=draw(st.integers(0, SYNCID_MAX)),
        maxlen=draw(st.none() | st.integers(1, MAXLEN_MAX)),
        group=draw(st.none() | v4_groups | v6_groups),
        port=draw(st.none() | st.integers(1, 65535)),
        ttl=draw(st.none() | st.integers(1, 255)),
    )


@given(sync_daemons())
def test_a_sync_daemon_round_trips(daemon: SyncDaemon) -> None:
    request = codec.daemon_start(daemon)
    msg = read(request)  # pyroute2 knows the command and the attribute, not what is inside it
    assert msg["cmd"] == codec.CMD_NEW_DAEMON
    assert msg.get_attr("IPVS_CMD_ATTR_DAEMON") is not None
    # The kernel's GET_DAEMON reply nests the same attributes (its defaults filled in).
    answer = codec.GENL_HDR.pack(codec.CMD_GET_DAEMON, codec.GENL_VERSION, 0) + request.body[4:]
    assert codec.daemon_from(answer) == daemon
    stop = read(codec.daemon_stop(daemon.state))
    assert stop["cmd"] == codec.CMD_DEL_DAEMON
