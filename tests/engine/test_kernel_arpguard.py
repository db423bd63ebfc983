"""Issue 23 point 5(d) on the VM's kernel (`tests/vm/run -k arpguard`): the namespace scenarios of
tests/engine/test_arpguard_netns.py, which the host suite runs on the host's kernel, run again in
the throwaway VM: a direct-routing real with the VIP on lo and arp_ignore=1/arp_announce=2 is
quiet; with arp_ignore=0 the guard, and the whole daemon in the director's namespace, report it
within one interval."""

from __future__ import annotations

import pytest

from tests.engine.test_arpguard_netns import (  # noqa: F401  (fixtures and tests, found by name)
    lab,
    test_guard_reports_a_real_answering_arp_and_nothing_for_a_quiet_one,
    test_hostile_replies_on_the_wire,
    test_the_daemon_in_the_directors_namespace_logs_the_conflict,
)

pytestmark = pytest.mark.kernel
