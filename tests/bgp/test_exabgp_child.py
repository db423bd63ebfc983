"""routes/exabgp.py's child handling against a stand-in for ExaBGP (no network): the generated
config reaches it, the API lines go through the FIFO to the process it runs, a child that died
is started again by the next `present()` (which then reports nothing announced, so that the
announcer's resync announces everything again), and stop ends it and removes the files."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import pytest

from lvsmon.routes.exabgp import ExaBgp
from tests.helpers import wait_for

# ExaBGP's part that matters here: run the process of the config, its stdout is the API
FAKE = """#!/bin/sh
conf="$1"
echo "started $$" >> "$FAKE_EXABGP_OUT.starts"
run=$(sed -n 's/^  run \\(.*\\);$/\\1/p' "$conf")
exec $run >> "$FAKE_EXABGP_OUT"
"""


def text(path: str) -> str:
    return Path(path).read_text()


def exists(path: str) -> bool:
    return Path(path).exists()


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "exabgp"
    script.write_text(FAKE)
    script.chmod(0o755)
    monkeypatch.setenv("FAKE_EXABGP_OUT", str(tmp_path / "api.out"))
    return script


async def test_lines_restart_and_stop(tmp_path: Path, fake: Path) -> None:
    neighbours = tmp_path / "neighbours.conf"
    neighbours.write_text("neighbor 10.0.0.1 {\n  local-as 65001;\n  peer-as 65000;\n}\n")
    out = tmp_path / "api.out"
    speaker = ExaBgp(str(neighbours), str(tmp_path / "lvsmon.x"), exabgp=str(fake))
    assert await speaker.start() == []
    conf = text(speaker.conf)
    assert "api { processes [ lvsmon ]; }" in conf and "local-as 65001;" in conf
    await speaker.announce("192.0.2.10", 100, ("65000:1",))
    await speaker.withdraw("192.0.2.10")
    await speaker.withdraw("192.0.2.10")  # not announced: nothing written
    await speaker.announce("192.0.2.11", 200, ())
    want = [
        "announce route 192.0.2.10/32 next-hop self med 100 community [65000:1]",
        "withdraw route 192.0.2.10/32 next-hop self",
        "announce route 192.0.2.11/32 next-hop self med 200",
    ]
    await wait_for(lambda: out.exists() and out.read_text().splitlines() == want, 5)
    assert await speaker.present() == {"192.0.2.11": 200}

    # the child dies: the next present() starts it again and reports nothing announced
    assert speaker.proc is not None
    first = speaker.proc.pid
    speaker.proc.kill()
    await speaker.proc.wait()
    assert await speaker.present() == {}
    assert speaker.restarts == 1 and speaker.proc is not None and speaker.proc.pid != first
    await speaker.announce("192.0.2.11", 200, ())
    await wait_for(lambda: len(out.read_text().splitlines()) == 4, 5)
    starts = (tmp_path / "api.out.starts").read_text().split()
    assert len(re.findall("started", " ".join(starts))) == 2

    child = speaker.proc.pid
    await speaker.stop()
    await asyncio.sleep(0.1)
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)
    assert not exists(speaker.fifo) and not exists(speaker.conf)


@pytest.mark.parametrize("what", ["fifo", "huge", "not utf-8"])
def test_a_neighbours_file_is_read_as_the_config_is(tmp_path: Path, what: str) -> None:
    """bgpexabgpconf is bounded and a regular file only: a FIFO never holds the start, a huge
    file never fills memory, and each is one OSError naming the file (the announcer's error)."""
    import os

    from lvsmon.routes import exabgp

    path = tmp_path / "neighbours.conf"
    if what == "fifo":
        os.mkfifo(path)
    elif what == "huge":
        path.write_bytes(b"neighbor 10.0.0.1 {\n}\n" + b"#" * (exabgp.MAX_NEIGHBOURS_BYTES + 1))
    else:
        path.write_bytes(b"neighbor 10.0.0.1 {\n}\n# \xff\n")
    speaker = ExaBgp(str(path), str(tmp_path / "lvsmon.x"), exabgp="/bin/false")
    with pytest.raises(OSError, match=r"neighbours\.conf"):
        speaker._prepare()
