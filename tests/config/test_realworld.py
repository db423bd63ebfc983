"""Conformance with ldirectord on configurations published by others (../shared/realworld-configs,
read in place; EXPECTED.md there gives ldirectord's verdict on each, SOURCES.md where it is from).

lvsmon accepts every file ldirectord accepts, with the same effective values, and rejects the
others at the same line or earlier. The effective values are ldirectord's own: the real
ldirectord runs on each file (tests/config/ldirectord_lab.py: a private mount and network
namespace, a recording ipvsadm) and the commands of its start-up are compared with
`lvsmon check-config --json`, run in the same environment: each virtual's protocol, address and
port or firewall mark, scheduler, persistence, netmask, scheduler flags and one-packet
scheduling (`ipvsadm -A`); each real's address, port, forwarding method, weight and thresholds
(`-a`); each fallback (`-a` logged as a fallback server).

Where lvsmon differs on purpose, DIVERGENCES says how and why (docs/compatibility.md), and the
file is held against ldirectord's verdict on a copy without trailing comments instead.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.config import ldirectord_lab as lab

REALWORLD = Path(__file__).parents[2] / ".." / "shared" / "realworld-configs"
WORKERS = 6  # ldirectord's start-up is mostly perl compiling itself: threads overlap it well


@dataclass(frozen=True)
class Verdict:
    accepts: bool
    line: int | None = None  # of the first error, when rejected

    def __str__(self) -> str:
        return "accepts" if self.accepts else f"rejects, line {self.line}"


@dataclass(frozen=True)
class Divergence:
    lvsmon: Verdict
    reason: str


TRAILING_COMMENTS = (
    'lvsmon cuts a `# comment` after a value on every line (docs/compatibility.md, "Comments"); '
    "ldirectord only does so inside virtual blocks and reads the comment of a global line as "
    "part of its value"
)

DIVERGENCES = {
    "23-zh-notes-trailing-comments": Divergence(Verdict(True), TRAILING_COMMENTS),
    "24-zh-dr-nbsp-comment": Divergence(
        Verdict(False, 7),
        TRAILING_COMMENTS + "; lvsmon's first error is then line 7's U+00A0 before the comment of "
        "a real, where ldirectord fails too once the comments of global lines are gone",
    ),
}


def expected_verdicts() -> dict[str, Verdict]:
    """EXPECTED.md's table: | file | accepts / rejects, line N | notes |."""
    verdicts: dict[str, Verdict] = {}
    text = (REALWORLD / "EXPECTED.md").read_text(encoding="utf-8")
    for m in re.finditer(r"^\| (\d\d-[\w.-]+) \| (accepts|rejects, line (\d+)) \|", text, re.M):
        line = int(m.group(3)) if m.group(3) else None
        verdicts[m.group(1)] = Verdict(m.group(2) == "accepts", line)
    return verdicts


def _names() -> list[str]:
    # collected even when the directory is missing, so that the test fails instead of vanishing
    return sorted(p.stem for p in REALWORLD.glob("*.cf")) or ["<no realworld-configs>"]


NAMES = _names()


def without_trailing_comments(data: bytes) -> bytes:
    """The file with every `# comment` after a directive removed (comment lines stay)."""
    lines = data.split(b"\n")
    return b"\n".join(
        line if line.lstrip().startswith(b"#") else re.sub(rb"[ \t]+#.*", b"", line)
        for line in lines
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, lab.LabRun]:
    """Each file, and the comment-free copy of each divergent one, through ldirectord and lvsmon."""
    assert REALWORLD.is_dir(), (
        f"{REALWORLD} is missing: the shared checkout must be next to the repo"
    )
    assert lab.LDIRECTORD.is_file(), "install the Debian package ldirectord"
    assert shutil.which("unshare"), "install util-linux (unshare)"
    assert os.geteuid() == 0, "ldirectord's namespace needs root (unshare -mn)"
    work = tmp_path_factory.mktemp("realworld")
    jobs = {name: REALWORLD / f"{name}.cf" for name in NAMES}
    for name in DIVERGENCES:
        copy = work / f"{name}.uncommented.cf"
        copy.write_bytes(without_trailing_comments(jobs[name].read_bytes()))
        jobs[f"{name}.uncommented"] = copy
    with ThreadPoolExecutor(WORKERS) as pool:
        futures = {name: pool.submit(lab.run, cf, work / name) for name, cf in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


def test_every_file_has_a_verdict() -> None:
    assert REALWORLD.is_dir(), (
        f"{REALWORLD} is missing: the shared checkout must be next to the repo"
    )
    assert sorted(expected_verdicts()) == NAMES
    assert len(NAMES) == 25


def ldirectord_verdict(run: lab.LabRun) -> Verdict:
    if run.ldirectord_rc == 0:
        return Verdict(True)
    m = re.search(r"^Error \[\d+\] reading file .* at line (\d+): ", run.ldirectord_stderr, re.M)
    assert run.ldirectord_rc == 2 and m, (
        f"ldirectord exited {run.ldirectord_rc}: {run.ldirectord_stderr[-2000:]}"
    )
    return Verdict(False, int(m.group(1)))


def lvsmon_verdict(run: lab.LabRun) -> Verdict:
    if run.lvsmon_rc == 0:
        return Verdict(True)
    assert run.lvsmon_rc == 2, run.lvsmon_stderr
    lines = [
        int(m.group(1))
        for m in re.finditer(r"^.*?\.cf:(\d+): (?!warning:)", run.lvsmon_stderr, re.M)
    ]
    assert lines, run.lvsmon_stderr
    return Verdict(False, min(lines))


@pytest.mark.parametrize("name", NAMES)
def test_ldirectord_gives_the_expected_verdict(name: str, runs: dict[str, lab.LabRun]) -> None:
    """The harness runs ldirectord as EXPECTED.md's `ldirectord FILE status` saw it."""
    assert ldirectord_verdict(runs[name]) == expected_verdicts()[name]


@pytest.mark.parametrize("name", NAMES)
def test_lvsmon_verdict(name: str, runs: dict[str, lab.LabRun]) -> None:
    """Accept what ldirectord accepts; reject the rest at ldirectord's line or earlier."""
    run = runs[name]
    got = lvsmon_verdict(run)
    if name in DIVERGENCES:
        divergence = DIVERGENCES[name]
        assert got == divergence.lvsmon, run.lvsmon_stderr
        # held against ldirectord on the same file without the trailing comments it trips on
        assert ldirectord_verdict(runs[f"{name}.uncommented"]) == got, divergence.reason
        return
    want = expected_verdicts()[name]
    if want.accepts:
        assert got.accepts, run.lvsmon_stderr
    else:
        assert not got.accepts and got.line is not None and want.line is not None
        assert got.line <= want.line, run.lvsmon_stderr


# -- effective values ------------------------------------------------------------------------


def endpoint(text: str) -> tuple[str, int]:
    """ "192.0.2.1:80" or "[2001:db8::1]:80" → (canonical address, port)."""
    host, _, port = text.rpartition(":")
    return str(ipaddress.ip_address(host.strip("[]"))), int(port)


@dataclass(frozen=True)
class Effective:
    """One file's IPVS view: what ldirectord tells ipvsadm, what lvsmon would apply."""

    virtuals: dict[str, tuple[Any, ...]]  # service -> (scheduler, persistent, netmask, flags, ops)
    reals: dict[tuple[str, tuple[str, int]], tuple[str, int, int, int]]  # -> (fwd, w, l, u)
    fallbacks: dict[str, tuple[tuple[str, int], str]]  # service -> (endpoint, forward)


FORWARDS = {"-g": "gate", "-m": "masq", "-i": "ipip"}
SWITCHES = {"-6", "-o", *FORWARDS}


def _options(argv: list[str]) -> dict[str, str]:
    opts: dict[str, str] = {}
    i = 1
    while i < len(argv):
        if argv[i] in SWITCHES:
            opts[argv[i]] = ""
            i += 1
        else:
            opts[argv[i]] = argv[i + 1]
            i += 2
    return opts


def _service(opts: dict[str, str]) -> str:
    """ldirectord's service: "tcp 192.0.2.1:80", "udp 2001:db8::1:53", "fwm 5", "fwm6 5"."""
    if "-f" in opts:
        return ("fwm6 " if "-6" in opts else "fwm ") + opts["-f"]
    proto = "tcp" if "-t" in opts else "udp"
    address, port = endpoint(opts["-t" if proto == "tcp" else "-u"])
    return f"{proto} {address}:{port}"


def from_ldirectord(run: lab.LabRun) -> Effective:
    virtuals: dict[str, tuple[Any, ...]] = {}
    for argv in run.commands():
        if argv[0] == "-A":
            opts = _options(argv)
            persistent = int(opts["-p"]) if "-p" in opts else None
            row = (opts["-s"], persistent, opts.get("-M"), opts.get("-b"), "-o" in opts)
            virtuals.setdefault(_service(opts), row)
    reals: dict[tuple[str, tuple[str, int]], tuple[str, int, int, int]] = {}
    fallbacks: dict[str, tuple[tuple[str, int], str]] = {}
    for addition in run.additions():
        opts = _options(addition.argv)
        service = _service(opts)
        address, port = endpoint(opts["-r"])
        if port == 0 and not service.startswith("fwm"):
            # the one known difference: a real without a port gets the virtual's in lvsmon
            port = int(service.rsplit(":", 1)[1])
        forward = next(FORWARDS[f] for f in FORWARDS if f in opts)
        if addition.tag == "fallback":
            fallbacks.setdefault(service, ((address, port), forward))
        else:
            weights = (int(opts["-w"]), int(opts["-y"]), int(opts["-x"]))
            reals.setdefault((service, (address, port)), (forward, *weights))
    return Effective(virtuals, reals, fallbacks)


def _lvsmon_service(v: dict[str, Any]) -> str:
    if v["protocol"] == "fwm":
        return ("fwm6 " if v["family"] == "inet6" else "fwm ") + str(v["fwmark"])
    return f"{v['protocol']} {v['address']}:{v['port']}"


def from_lvsmon(config: dict[str, Any]) -> Effective:
    virtuals: dict[str, tuple[Any, ...]] = {}
    reals: dict[tuple[str, tuple[str, int]], tuple[str, int, int, int]] = {}
    fallbacks: dict[str, tuple[tuple[str, int], str]] = {}
    for v in config["virtuals"]:
        service = _lvsmon_service(v)
        netmask = v["netmask"] if v["persistent"] is not None else None  # as ipvsadm is told
        virtuals[service] = (v["scheduler"], v["persistent"], netmask, v["schedflags"], v["ops"])
        for r in v["reals"]:
            row = (r["forward"], r["weight"], r["lower"], r["upper"])
            reals[(service, (r["address"], r["port"]))] = row
        if (fb := v["fallback"]) is not None:
            fallbacks[service] = ((fb["address"], fb["port"]), fb["forward"])
    return Effective(virtuals, reals, fallbacks)


def hidden_by_startup(config: dict[str, Any]) -> set[tuple[str, tuple[str, int]]]:
    """Reals ldirectord's start-up never adds, so that their values cannot be read off it.

    Before the first check ld_start adds each real and takes it down again, but it collects
    them in a hash keyed by the real's address:port alone: when later virtuals hold a real at
    the same address, only the last one is added (with every virtual holding an identical real,
    same weight, forwarding, check...), the others are not. These are the reals whose address
    is a real of a later virtual.
    """
    hidden: set[tuple[str, tuple[str, int]]] = set()
    virtuals = config["virtuals"]
    for i, v in enumerate(virtuals):
        later = {r["address"] for w in virtuals[i + 1 :] for r in w["reals"]}
        service = _lvsmon_service(v)
        hidden |= {
            (service, (r["address"], r["port"])) for r in v["reals"] if r["address"] in later
        }
    return hidden


def _compared() -> list[str]:
    if not (REALWORLD / "EXPECTED.md").is_file():
        return ["<no realworld-configs>"]  # fails in the fixture, as everything else here
    accepted = [n for n, v in sorted(expected_verdicts().items()) if v.accepts]
    return accepted + [n for n, d in DIVERGENCES.items() if d.lvsmon.accepts]


COMPARED = _compared()


@pytest.mark.parametrize("name", COMPARED)
def test_effective_values_are_ldirectords(name: str, runs: dict[str, lab.LabRun]) -> None:
    run = runs[name]
    assert run.lvsmon_rc == 0, run.lvsmon_stderr
    config = json.loads(run.lvsmon_json)
    ours = from_lvsmon(config)
    theirs = from_ldirectord(runs[f"{name}.uncommented" if name in DIVERGENCES else name])
    assert theirs.virtuals, "ldirectord created no virtual service"
    assert ours.virtuals == theirs.virtuals
    assert ours.fallbacks == theirs.fallbacks
    # every real ldirectord added is lvsmon's, with the same values ...
    assert {k: ours.reals.get(k) for k in theirs.reals} == theirs.reals
    # ... and every real of lvsmon's that it did not add is one its start-up cannot show
    unseen = set(ours.reals) - set(theirs.reals)
    assert unseen <= hidden_by_startup(config)
