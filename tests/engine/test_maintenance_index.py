"""maintenancedir and drain names resolved through an index by host (issue 22 goal 5): the same
reals as every real's candidate_names, without those names kept per real."""

from __future__ import annotations

import os
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from lvsmon.engine.drain import DrainEntry, DrainIndex
from lvsmon.engine.jobs import RealRef
from lvsmon.engine.maintenance import HostIndex, MaintenanceDir, RealNames, candidate_names
from lvsmon.ipvs.model import ServiceKey

SERVICES = [ServiceKey.inet("tcp", "192.0.2.1", 80), ServiceKey.inet("tcp", "2001:db8::1", 443)]
ADDRESSES = ["10.0.0.1", "10.0.0.2", "2001:db8::5", "::1"]
FQDNS = ["web1.example.org", "web2.example.org", "localhost", "x"]

refs_strategy = st.lists(
    st.builds(
        RealRef,
        st.sampled_from(SERVICES),
        st.sampled_from(ADDRESSES),
        st.sampled_from([0, 80, 8080, 443]),
    ),
    unique=True,
    max_size=12,
)
fqdn_strategy = st.dictionaries(st.sampled_from(ADDRESSES), st.sampled_from(FQDNS))


def expected(refs: list[RealRef], fqdn: dict[str, str], name: str) -> set[RealRef]:
    return {r for r in refs if name in candidate_names(r, fqdn.get(r.address))}


@settings(max_examples=300, deadline=None)
@given(refs_strategy, fqdn_strategy, st.data())
def test_the_index_finds_what_the_candidate_names_name(
    refs: list[RealRef], fqdn: dict[str, str], data: st.DataObject
) -> None:
    index = HostIndex(refs, fqdn)
    every = sorted({n for r in refs for n in candidate_names(r, fqdn.get(r.address))})
    noise = ["10.0.0.1:", ":80", "[::1]", "::1", "web1", "web1:080", "10.0.0.1:80.drain", ""]
    name = data.draw(st.sampled_from(every + noise) | st.text(max_size=12))
    found = index.refs_named(name)
    assert set(found) == expected(refs, fqdn, name)
    assert len(found) == len(set(found))


def test_a_scan_costs_the_directory_and_finds_what_it_did() -> None:
    service = SERVICES[0]
    refs = frozenset(RealRef(service, f"10.1.{i // 200}.{i % 200 + 1}", 80) for i in range(2000))
    folder = tempfile.mkdtemp(prefix="lvsmon-maint-")
    try:
        for name in ("10.1.0.7:80", "10.1.3.9", "10.1.0.8:81", "unrelated", "10.1.0.10:80.drain"):
            open(os.path.join(folder, name), "w").close()
        maint = MaintenanceDir(folder, refs, reverse=False)
        assert maint.scan() == {RealRef(service, "10.1.0.7", 80), RealRef(service, "10.1.3.9", 80)}
        # the names are made when asked, the same as before; none is kept per real
        names = maint.names
        assert isinstance(names, RealNames) and not hasattr(names, "__dict__")
        ref = RealRef(service, "10.1.0.7", 80)
        assert names[ref] == ["10.1.0.7:80", "10.1.0.7"] and len(names) == 2000
        # a drain index of the same names takes the maintenance index itself
        index = DrainIndex(names)
        assert index._hosts is names.index and not index._by_name
        assert index.refs_of(DrainEntry("10.1.0.7:80", None)) == [ref]
    finally:
        for name in os.listdir(folder):
            os.unlink(os.path.join(folder, name))
        os.rmdir(folder)


def test_a_plain_drain_index_keeps_no_name_per_real() -> None:
    refs = [RealRef(SERVICES[0], "10.0.0.1", 80), RealRef(SERVICES[1], "10.0.0.1", 443)]
    index = DrainIndex.plain(refs)
    assert not index._by_name
    assert index.refs_of(DrainEntry("10.0.0.1", None)) == refs
    assert index.refs_of(DrainEntry("10.0.0.1:443", None)) == refs[1:]
