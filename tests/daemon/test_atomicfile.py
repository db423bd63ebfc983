"""write_atomic: whole files, exact modes, and never a write through a symlink."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from lvsmon.atomicfile import write_atomic
from lvsmon.daemon import pidfile


@pytest.fixture
def umask_077() -> Iterator[None]:
    old = os.umask(0o077)
    yield
    os.umask(old)


def victim(tmp_path: Path, name: str = "victim") -> Path:
    path = tmp_path / name
    path.write_text("precious\n")
    return path


def test_mode_is_exact_whatever_the_umask(tmp_path: Path, umask_077: None) -> None:
    target = tmp_path / "x.pid"
    write_atomic(str(target), "42\n")
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    write_atomic(str(target), b"43\n", 0o600)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_bytes() == b"43\n"
    # the pid file too: non-root tools must be able to read it
    pidfile.write_pid(str(target), 44)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert target.read_text() == "44\n"


def test_a_symlink_at_the_target_is_replaced_not_followed(tmp_path: Path) -> None:
    precious = victim(tmp_path)
    target = tmp_path / "status.json"
    target.symlink_to(precious)
    write_atomic(str(target), "{}")
    assert precious.read_text() == "precious\n"
    assert not target.is_symlink() and target.is_file() and target.read_text() == "{}"


def test_symlinks_at_the_old_temporary_names_are_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "lvsmon.pid"
    planted = {
        Path(f"{target}.tmp"): victim(tmp_path, "v1"),  # the status writer's old name
        Path(f"{target}.{os.getpid()}.tmp"): victim(tmp_path, "v2"),  # the pid writer's
    }
    for link, dest in planted.items():
        link.symlink_to(dest)
    write_atomic(str(target), "1\n")
    pidfile.write_pid(str(target), os.getpid())
    for link, dest in planted.items():
        assert dest.read_text() == "precious\n"
        assert link.is_symlink()
    assert target.read_text() == f"{os.getpid()}\n"
    # no temporary file is left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["lvsmon.pid", "v1", "v2", *(p.name for p in planted)]
    )


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(IsADirectoryError):
        write_atomic(str(tmp_path / "dir"), "x")
    assert [p.name for p in tmp_path.iterdir()] == ["dir"]
