"""Choosing a backend by name (the `--ipvs-backend` style setting)."""

from __future__ import annotations

from lvsmon.ipvs.backend import IpvsBackend

BACKENDS = ("netlink", "ipvsadm", "memory")


class UnknownBackend(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown IPVS backend {name!r}; choose one of: {', '.join(BACKENDS)}")
        self.name = name


def make_backend(name: str, *, ipvsadm: str | None = None) -> IpvsBackend:
    """A new backend. `ipvsadm` is the binary the ipvsadm backend runs (default: from $PATH);
    the other backends take no setting, so the command lines pass it whatever the choice."""
    if name == "memory":
        from lvsmon.ipvs import memory_faults

        # test and demo only: LVSMON_MEMORY_FAULTS / _DRIFT / _DUMP (lvsmon/ipvs/memory_faults.py)
        if memory_faults.wanted_from_env():
            return memory_faults.FaultyMemoryBackend.from_env()
        from lvsmon.ipvs.memory import MemoryBackend

        return MemoryBackend()
    if name == "ipvsadm":
        from lvsmon.ipvs.ipvsadm import IpvsadmBackend

        return IpvsadmBackend(ipvsadm)
    if name == "netlink":
        # Imported only when chosen: pyroute2 is heavy and the other backends don't need it.
        from lvsmon.ipvs.netlink import NetlinkBackend  # type: ignore[import-not-found,unused-ignore]

        backend: IpvsBackend = NetlinkBackend()
        return backend
    raise UnknownBackend(name)
