"""The Debian package, built by scripts/build-deb from packaging/debian, as an operator gets it:
lintian shows no error, the contents are where the issue says, the maintainer scripts start
nothing; installed on this host (apt-get, as root), `lvsmon check-config`, the daemon and the OCF
agent run from the INSTALLED files, and a purge leaves nothing behind. The package is built once
per run (about a minute: the bundled wheels come from PyPI or the configured index); every step
prints its measured time. Installing on the host is fine on the throwaway CI machine; the test
purges the package again, also when it fails."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VERSION = re.findall(r'^version = "(.+)"$', (REPO / "pyproject.toml").read_text(), re.M)[0]
SBIN = Path("/usr/sbin/lvsmon")
VENV = Path("/usr/lib/lvsmon")
AGENT = Path("/usr/lib/ocf/resource.d/lvsmon/lvsmon")
EXAMPLE = Path("/usr/share/doc/lvsmon/examples/ldirectord.cf.example")
# what the package owns as a whole: gone after a purge
OWN_DIRS = (VENV, Path("/usr/share/doc/lvsmon"), AGENT.parent)
UNITS = (
    Path("/lib/systemd/system/lvsmon.service"),
    Path("/lib/systemd/system/lvsmon-forking.service"),
)
TOOLS = ("dpkg-buildpackage", "dh", "help2man", "lintian", "apt-get", "systemd-analyze")
APT = ["apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=300"]

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="installs a Debian package: needs root"),
    pytest.mark.skipif(
        not all(shutil.which(t) for t in TOOLS),
        reason="needs " + ", ".join(TOOLS) + ": install the Debian packages debhelper, help2man, "
        "lintian and systemd (tests/debian-packages.txt)",
    ),
]


def say(config: pytest.Config, line: str) -> None:
    """Measured times go to the terminal, also when pytest captures output."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print(f"[deb] {line}")
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(f"[deb] {line}")


def run(
    *cmd: str | Path, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive", **(env or {})},
    )


def installed() -> bool:
    done = run("dpkg-query", "-W", "-f=${Status}", "lvsmon")
    return done.returncode == 0 and "installed" in done.stdout.split()


@pytest.fixture(scope="module")
def deb(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deb")
    started = time.monotonic()
    done = run(REPO / "scripts" / "build-deb", out, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    say(pytestconfig, f"scripts/build-deb: {time.monotonic() - started:.1f} s")
    path = out / f"lvsmon_{VERSION}_{run('dpkg', '--print-architecture').stdout.strip()}.deb"
    assert path.is_file(), done.stdout
    return path


def test_lintian_shows_no_error(deb: Path, pytestconfig: pytest.Config) -> None:
    started = time.monotonic()
    done = run("lintian", "--fail-on", "error", deb, timeout=300)
    say(pytestconfig, f"lintian: {time.monotonic() - started:.1f} s")
    tags = [line for line in done.stdout.splitlines() if re.match(r"[EWIP]: ", line)]
    for line in tags:
        say(pytestconfig, f"lintian: {line}")
    assert not [t for t in tags if t.startswith("E:")], done.stdout
    assert done.returncode == 0, done.stdout + done.stderr


def test_contents_are_where_an_operator_looks(deb: Path) -> None:
    listing = run("dpkg-deb", "--contents", deb).stdout
    entries = {line.split()[5].lstrip("."): line for line in listing.splitlines()}
    assert entries["/usr/sbin/lvsmon"].startswith("l")  # -> the bundled environment's entry point
    assert "-> ../lib/lvsmon/bin/lvsmon" in entries["/usr/sbin/lvsmon"]
    assert entries[str(AGENT)].startswith("-rwxr-xr-x")
    for path in (
        *map(str, UNITS),
        "/usr/share/man/man8/lvsmon.8.gz",
        str(EXAMPLE),
        "/usr/share/doc/lvsmon/operations.md",  # uncompressed: the unit's Documentation= link
        "/usr/share/doc/lvsmon/copyright",
    ):
        assert path in entries, path
    # byte-code would name the build directory; postinst compiles it in place instead
    assert not [p for p in entries if "__pycache__" in p or p.endswith(".pyc")]


def test_the_man_page_is_the_help_text(deb: Path, tmp_path: Path) -> None:
    run("dpkg-deb", "-x", deb, tmp_path)
    page = run("zcat", tmp_path / "usr/share/man/man8/lvsmon.8.gz").stdout.replace("\\-", "-")
    assert '.TH LVSMON "8"' in page
    helptext = run(sys.executable, "-m", "lvsmon", "--help").stdout
    options = set(re.findall(r"(?<![\w-])--?[a-z][\w-]*", helptext))
    commands = set(re.findall(r"^  ([a-z][a-z-]+) ", helptext, re.M))
    assert {"--backend", "--pid-file"} <= options and {"start", "reload"} <= commands
    missing = sorted(w for w in options | commands if w not in page)
    assert not missing, f"lvsmon --help says {missing}, lvsmon(8) does not: a stale man page"


def test_maintainer_scripts_start_nothing(deb: Path) -> None:
    """Neither an install nor an upgrade starts, stops or restarts a daemon (packaging/README.md);
    only prerm stops the systemd unit when the package is removed."""
    for script in ("preinst", "postinst", "postrm"):
        text = run("dpkg-deb", "--info", deb, script).stdout
        # the commands, not the comments and messages that talk about them
        code = "\n".join(
            line for line in text.splitlines() if not line.strip().startswith(("#", "echo", '"'))
        )
        assert not re.search(r"deb-systemd-invoke|invoke-rc\.d|systemctl (--\S+ )*(re)?start", code)
    prerm = run("dpkg-deb", "--info", deb, "prerm").stdout
    assert re.findall(r"deb-systemd-invoke \S+", prerm) == ["deb-systemd-invoke stop"]


@pytest.fixture
def installed_deb(deb: Path, pytestconfig: pytest.Config) -> Iterator[list[str]]:
    """The package installed on this host for the test; purged afterwards in any case."""
    assert not installed(), (
        "a package lvsmon is already installed here (a run killed half-way?): "
        "`dpkg --purge lvsmon`, then run again"
    )
    started = time.monotonic()
    try:
        done = run(*APT, "install", "--no-install-recommends", deb, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        say(pytestconfig, f"apt-get install: {time.monotonic() - started:.1f} s")
        yield run("dpkg", "-L", "lvsmon").stdout.split()
    finally:
        if installed():
            run(*APT, "purge", "lvsmon", timeout=600)


def test_installed_package_runs_then_purges_cleanly(
    deb: Path, installed_deb: list[str], tmp_path: Path, pytestconfig: pytest.Config
) -> None:
    files = installed_deb
    # the postinst started nothing and enabled nothing
    assert not list(Path("/etc/systemd/system").glob("*/lvsmon*.service"))
    # the units fit the package: systemd-analyze also checks that their commands exist
    for unit in UNITS:
        done = run("systemd-analyze", "verify", "--man=no", unit)
        assert done.returncode == 0, done.stderr
    assert not [p for p in run("ps", "-eo", "args").stdout.splitlines() if str(VENV) in p]
    assert run(SBIN, "--version").stdout.startswith(f"lvsmon {VERSION} ")

    started = time.monotonic()
    done = run(SBIN, "check-config", EXAMPLE)
    assert done.returncode == 0, done.stdout + done.stderr
    bad = tmp_path / "bad.cf"
    bad.write_text("virtual=127.0.0.100:80\n\treal=127.0.0.1:80 masq\n\tbogus=often\n")
    done = run(SBIN, "check-config", bad)
    assert done.returncode == 2 and f"{bad}:3:" in done.stderr, done.stderr
    say(pytestconfig, f"check-config (installed): {time.monotonic() - started:.1f} s")

    # every module of the bundled lvsmon imports (oracle needs the oracle extra, not bundled)
    done = run(
        VENV / "bin/python",
        "-I",
        "-c",
        "import importlib, pkgutil, lvsmon\n"
        "for m in pkgutil.walk_packages(lvsmon.__path__, 'lvsmon.'):\n"
        "    if not m.name.endswith(('.__main__', '.checks.oracle')):\n"
        "        importlib.import_module(m.name)\n"
        "print(lvsmon.__file__)",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{VENV}/lib/python3.11/site-packages/lvsmon/"), done.stdout

    # the installed daemon: start (returns once the table is programmed), status, stop; the
    # memory backend touches no kernel and the connect check only a listener on loopback
    started = time.monotonic()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        cf, pid = tmp_path / "lb.cf", tmp_path / "lb.pid"
        cf.write_text(
            f'checkinterval=1\nlogfile="{tmp_path / "lb.log"}"\n'
            f"virtual=127.0.0.100:80\n\treal=127.0.0.1:{port} masq\n\tchecktype=connect\n"
        )
        daemon: list[str | Path] = [SBIN, "--backend", "memory", "--pid-file", pid, cf]
        try:
            done = run(*daemon, "start")
            assert done.returncode == 0, done.stdout + done.stderr
            assert run(*daemon, "status").returncode == 0
            say(pytestconfig, f"daemon start (installed): {time.monotonic() - started:.1f} s")
            # an upgrade (the same version again) replaces the files and leaves the running
            # daemon alone: no stop, no restart (packaging/README.md says why)
            before = pid.read_text().strip()
            started = time.monotonic()
            done = run(*APT, "install", "--reinstall", "--no-install-recommends", deb, timeout=600)
            assert done.returncode == 0, done.stdout + done.stderr
            say(pytestconfig, f"apt-get install --reinstall: {time.monotonic() - started:.1f} s")
            assert run(*daemon, "status").returncode == 0
            assert pid.read_text().strip() == before
        finally:
            started = time.monotonic()
            done = run(*daemon, "stop")
        assert done.returncode == 0, done.stdout + done.stderr
        assert run(*daemon, "status").returncode == 3
    say(pytestconfig, f"daemon stop (installed): {time.monotonic() - started:.1f} s")

    # the OCF agent from its installed place, with the installed binary
    assert str(AGENT) in files
    env = {**os.environ, "OCF_ROOT": "/usr/lib/ocf"}
    done = run(AGENT, "meta-data", env=env)
    assert done.returncode == 0, done.stderr
    meta = ET.fromstring(done.stdout)
    assert meta.tag == "resource-agent" and meta.get("name") == "lvsmon"
    assert {"configfile", "binary"} <= {p.get("name") for p in meta.iter("parameter")}
    done = run(
        AGENT,
        "validate-all",
        env={
            **env,
            "OCF_RESOURCE_INSTANCE": "lvs",
            "OCF_RESKEY_binary": str(SBIN),
            "OCF_RESKEY_configfile": str(EXAMPLE),
            "HA_LOGFILE": str(tmp_path / "agent.log"),
        },
    )
    assert done.returncode == 0, done.stdout + done.stderr

    # byte-code that postinst and Python wrote is not in the package's list; prerm removes it
    assert list(VENV.rglob("__pycache__"))
    started = time.monotonic()
    done = run(*APT, "purge", "lvsmon", timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    say(pytestconfig, f"apt-get purge: {time.monotonic() - started:.1f} s")
    assert not installed()
    # every file is gone (shared directories such as /usr/lib stay, as they should)
    left = [f for f in files if os.path.lexists(f) and not os.path.isdir(f)]
    left += [str(d) for d in OWN_DIRS if d.exists()]
    left += [str(p) for p in Path("/var/lib/systemd").glob("deb-systemd-*/**/lvsmon.service*")]
    assert not left, f"left behind after purge: {left}"
