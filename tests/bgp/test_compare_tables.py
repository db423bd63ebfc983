"""ipvs/compare.py and `lvsmon compare-tables`: two directors' tables as ECMP needs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lvsmon.ipvs.compare import differences
from lvsmon.ipvs.ipvsadm_format import parse_save

D1 = """\
-A -t 192.0.2.10:80 -s mh -b mh-port
-a -t 192.0.2.10:80 -r 10.0.0.1:80 -g -w 1
-a -t 192.0.2.10:80 -r 10.0.0.2:80 -g -w 1
-A -t 192.0.2.10:443 -s mh
-a -t 192.0.2.10:443 -r 10.0.0.1:443 -g -w 1
"""


def test_alike() -> None:
    assert differences(parse_save(D1), parse_save(D1)) == []


def test_every_kind_of_difference() -> None:
    d2 = (
        D1.replace("-b mh-port", "")
        .replace("10.0.0.2:80 -g -w 1", "10.0.0.2:80 -g -w 2")
        .replace("-A -t 192.0.2.10:443 -s mh", "-A -t 192.0.2.10:443 -s wrr")
        + "-a -t 192.0.2.10:443 -r 10.0.0.3:443 -g -w 1\n-A -u 192.0.2.10:53 -s mh\n"
    )
    assert differences(parse_save(D1), parse_save(d2), ("d1", "d2")) == [
        "udp:192.0.2.10:53: only on d2",
        "tcp:192.0.2.10:80: flags mh-port on d1, none on d2",
        "tcp:192.0.2.10:80: real 10.0.0.2:80 weight 1 on d1, 2 on d2",
        "tcp:192.0.2.10:443: scheduler mh on d1, wrr on d2",
        "tcp:192.0.2.10:443: real 10.0.0.3:443 only on d2",
    ]
    wlc = D1.replace("-s mh -b mh-port", "-s wlc")
    assert differences(parse_save(wlc), parse_save(wlc))[0].endswith(
        "scheduler wlc on both: not consistent across directors (mh is)"
    )


def test_the_command(tmp_path: Path) -> None:
    a, b = tmp_path / "d1.txt", tmp_path / "d2.txt"
    a.write_text(D1)
    b.write_text(D1.replace("-w 1\n-A", "-w 3\n-A"))
    run = [sys.executable, "-m", "lvsmon", "compare-tables"]
    same = subprocess.run([*run, str(a), str(a)], capture_output=True, text=True, check=False)
    assert same.returncode == 0 and "2 services alike" in same.stdout
    diff = subprocess.run([*run, str(a), str(b)], capture_output=True, text=True, check=False)
    assert diff.returncode == 1
    assert diff.stdout == f"tcp:192.0.2.10:80: real 10.0.0.2:80 weight 1 on {a}, 3 on {b}\n"
    bad = subprocess.run(
        [*run, str(a), "/nonexistent"], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2 and "/nonexistent" in bad.stderr
