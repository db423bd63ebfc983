"""/etc/hosts, read without DNS: the forward lookup (LVSMON_RESOLVER=files) and the reverse one
(maintenancedir names), from one reader."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from lvsmon.config import resolve


@pytest.fixture
def hosts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "hosts"
    path.write_text(
        "# a comment line\n"
        "127.0.0.1\tlocalhost\n"
        "10.0.0.5 web1.example web1 # trailing comment\n"
        "fe80::1%eth0 linklocal\n"
        "::1 web1.example\n"
        "lonely\n"
        "not-an-address web2\n"
    )
    monkeypatch.setattr(resolve, "HOSTS_FILE", str(path))
    return path


def test_forward_by_family_and_any_alias_case_blind(hosts: Path) -> None:
    assert resolve.hosts_file_lookup("WEB1", socket.AF_INET) == "10.0.0.5"
    assert resolve.hosts_file_lookup("web1.example", socket.AF_INET6) == "::1"
    assert resolve.hosts_file_lookup("linklocal", socket.AF_INET6) == "fe80::1"
    assert resolve.hosts_file_lookup("web2", socket.AF_INET) is None  # no valid address
    assert resolve.hosts_file_lookup("lonely", socket.AF_INET) is None  # no name at all
    assert resolve.hosts_file_lookup("comment", socket.AF_INET) is None


def test_reverse_gives_the_first_name(hosts: Path) -> None:
    assert resolve.hosts_file_name("10.0.0.5") == "web1.example"
    assert resolve.hosts_file_name("10.0.0.6") is None


def test_unreadable_file_is_no_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resolve, "HOSTS_FILE", str(tmp_path / "missing"))
    assert resolve.hosts_file_lookup("localhost", socket.AF_INET) is None
    assert resolve.hosts_file_name("127.0.0.1") is None
