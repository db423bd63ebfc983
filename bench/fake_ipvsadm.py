#!/usr/bin/python3 -IS
"""A stand-in for ipvsadm that keeps a real table in a file and logs every call.

For benchmarks on a host without IPVS: ldirectord (through a bind mount over /usr/sbin/ipvsadm)
and lvsmon (`--backend ipvsadm --ipvsadm THIS`) both run it, so both pay for the same tool.
Reads return what was written, in ipvsadm 1.31's formats (tests/ipvs/samples/): `-L -n`,
`-L -n --thresholds`, `-S -n`; writes: `-A -E -D -a -e -d -C -Z` and `-R` (lines from stdin,
each line's error on stderr, the batch goes on; exit status = the last line's; a line that
cannot be parsed ends the batch with 2). Error words and exit codes are ipvsadm's (255 for a
refused command, 2 for bad syntax); `-e`/`-E` reset what they are not given, like ipvsadm.

State lives in $LVSMON_FAKE_IPVSADM_DIR: table.json (the table), calls.jsonl (one line per call:
start time, duration, arguments, exit status, -R line count, and how many destinations have a
weight above 0, per destination port, after the call). Started with -I -S for a short start-up.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time

SCHEDULERS = {
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos"
}  # fmt: skip
FORWARD_WORD = {"g": "Route", "m": "Masq", "i": "Tunnel"}
FORWARD_FLAG = {"Route": "-g", "Masq": "-m", "Tunnel": "-i"}
COMMANDS = {
    "-A": "A", "--add-service": "A", "-E": "E", "--edit-service": "E",
    "-D": "D", "--delete-service": "D", "-C": "C", "--clear": "C",
    "-R": "R", "--restore": "R", "-S": "S", "--save": "S",
    "-a": "a", "--add-server": "a", "-e": "e", "--edit-server": "e",
    "-d": "d", "--delete-server": "d", "-L": "L", "-l": "L", "--list": "L",
    "-Z": "Z", "--zero": "Z", "-v": "v", "--version": "v",
}  # fmt: skip
SERVICE_OPTS = {
    "-t": "TCP", "--tcp-service": "TCP", "-u": "UDP", "--udp-service": "UDP",
    "--sctp-service": "SCTP", "-f": "FWM", "--fwmark-service": "FWM",
}  # fmt: skip
VALUE_OPTS = {
    "-s": "sched", "--scheduler": "sched", "-M": "netmask", "--netmask": "netmask",
    "-b": "flags", "--sched-flags": "flags", "-r": "dest", "--real-server": "dest",
    "-w": "weight", "--weight": "weight", "-x": "upper", "--u-threshold": "upper",
    "-y": "lower", "--l-threshold": "lower", "--pe": "pe", "--tun-type": "tun",
    "--tun-port": "tun", "--tun-nocsum": "tun", "--tun-csum": "tun", "--tun-remcsum": "tun",
}  # fmt: skip
FLAG_OPTS = {
    "-g": "g", "--gatewaying": "g", "-m": "m", "--masquerading": "m", "-i": "i", "--ipip": "i",
    "-n": "", "--numeric": "", "--thresholds": "thresholds", "--exact": "", "-6": "inet6",
    "-o": "ops", "--ops": "ops", "--stats": "", "--rate": "", "--sort": "",
}  # fmt: skip

Table = dict[str, dict[str, object]]
Dests = dict[str, list[object]]


class Refused(Exception):
    """The kernel said no (exit 255)."""


class BadSyntax(Exception):
    """ipvsadm itself cannot parse the command (exit 2)."""


def split_tokens(args: list[str]) -> list[str]:
    """`-Ln` → `-L -n`, `-w1` → `-w 1`, as popt does."""
    out: list[str] = []
    for tok in args:
        if tok.startswith("-") and not tok.startswith("--") and len(tok) > 2:
            if f"-{tok[1]}" in VALUE_OPTS:
                out += [tok[:2], tok[2:]]
            else:
                out += [f"-{c}" for c in tok[1:]]
        else:
            out.append(tok)
    return out


def parse(args: list[str]) -> dict[str, str]:
    """One command line → {cmd, svc, sched, dest, weight, ...}; raises BadSyntax."""
    toks = split_tokens(args)
    got: dict[str, str] = {}
    i = 0
    while i < len(toks):
        tok = toks[i]
        if tok in COMMANDS:
            if "cmd" in got:
                raise BadSyntax("You may only specify one command")
            got["cmd"] = COMMANDS[tok]
            # -L/-Z/-D... may be followed by a service; nothing else takes a positional
        elif tok in SERVICE_OPTS:
            if i + 1 >= len(toks):
                raise BadSyntax(f"option {tok} needs a value")
            i += 1
            got["svc"] = f"{SERVICE_OPTS[tok]} {toks[i]}"
        elif tok in ("-p", "--persistent"):
            got["persistent"] = "300"
            if i + 1 < len(toks) and toks[i + 1].isdigit():
                i += 1
                got["persistent"] = toks[i]
        elif tok in VALUE_OPTS:
            if i + 1 >= len(toks):
                raise BadSyntax(f"option {tok} needs a value")
            i += 1
            got[VALUE_OPTS[tok]] = toks[i]
        elif tok in FLAG_OPTS:
            word = FLAG_OPTS[tok]
            if word in FORWARD_WORD:
                got["forward"] = FORWARD_WORD[word]
            elif word:
                got[word] = "1"
        else:
            raise BadSyntax(f"invalid option: {tok}")
        i += 1
    if "cmd" not in got:
        raise BadSyntax("no command specified")
    if "inet6" in got and got.get("svc", "").startswith("FWM "):
        got["svc"] += " IPv6"
    return got


def number(text: str, what: str, top: int) -> int:
    if not text.isdigit() or int(text) > top:
        raise BadSyntax(f"illegal {what} specified")
    return int(text)


def need_service(got: dict[str, str]) -> str:
    svc = got.get("svc")
    if svc is None:
        raise BadSyntax("no service specified")
    return svc


def service_entry(got: dict[str, str]) -> dict[str, object]:
    sched = got.get("sched", "wlc")
    if sched not in SCHEDULERS:
        raise Refused("Scheduler or persistence engine not found")
    return {
        "sched": sched,
        "persistent": got.get("persistent"),
        "netmask": got.get("netmask") if "persistent" in got else None,
        "flags": got.get("flags", ""),
        "ops": "ops" in got,
        "dests": {},
    }


def execute(table: Table, got: dict[str, str]) -> str:
    """Apply one parsed command to the table; returns what it prints on stdout."""
    cmd = got["cmd"]
    if cmd == "C":
        table.clear()
        return ""
    if cmd == "L":
        return listing(table, "thresholds" in got)
    if cmd == "S":
        return save(table)
    if cmd == "v":
        return "ipvsadm v1.31 2019/12/24 (compiled with popt and IPVS v1.2.1)\n"
    if cmd == "Z":
        if "svc" in got and got["svc"] not in table:
            raise Refused("No such service")
        return ""
    svc = need_service(got)
    if cmd == "A":
        if svc in table:
            raise Refused("Service already exists")
        table[svc] = service_entry(got)
        return ""
    if cmd in ("E", "D"):
        if svc not in table:
            raise Refused("No such service")
        if cmd == "D":
            del table[svc]
        else:
            entry = service_entry(got)
            entry["dests"] = table[svc]["dests"]
            table[svc] = entry
        return ""
    dest = got.get("dest")
    if dest is None:
        raise BadSyntax("no destination specified")
    if svc not in table:
        raise Refused("Service not defined")
    dests = table[svc]["dests"]
    assert isinstance(dests, dict)
    if cmd == "d":
        if dest not in dests:
            raise Refused("No such destination")
        del dests[dest]
        return ""
    conf = [
        got.get("forward", "Route"),
        number(got.get("weight", "1"), "weight", 65535),
        number(got.get("upper", "0"), "upper threshold", 2**32 - 1),
        number(got.get("lower", "0"), "lower threshold", 2**32 - 1),
    ]
    if cmd == "a":
        if dest in dests:
            raise Refused("Destination already exists")
    elif dest not in dests:
        raise Refused("No such destination")
    dests[dest] = conf
    return ""


def service_words(key: str, entry: dict[str, object]) -> str:
    proto, _, rest = key.partition(" ")
    text = f"{proto:<4} {rest} {entry['sched']}"
    if entry["flags"]:
        text += f" ({entry['flags']})"
    if entry["persistent"] is not None:
        text += f" persistent {entry['persistent']}"
        if entry["netmask"]:
            text += f" mask {entry['netmask']}"
    if entry["ops"]:
        text += " ops"
    return text


def listing(table: Table, thresholds: bool) -> str:
    out = ["IP Virtual Server version 1.2.1 (size=4096)"]
    if thresholds:
        out.append("Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn ")
        out.append("  -> RemoteAddress:Port")
    else:
        out.append("Prot LocalAddress:Port Scheduler Flags")
        out.append("  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn")
    for key in sorted(table):
        entry = table[key]
        out.append(service_words(key, entry))
        dests = entry["dests"]
        assert isinstance(dests, dict)
        for dest, (fwd, weight, upper, lower) in dests.items():
            if thresholds:
                out.append(f"  -> {dest:<28} {upper:<10} {lower:<10} {0:<10} {0:<10}")
            else:
                out.append(f"  -> {dest:<28} {fwd:<7} {weight:<6} {0:<10} {0:<10}")
    return "".join(line + "\n" for line in out)


def save(table: Table) -> str:
    out: list[str] = []
    for key in sorted(table):
        entry = table[key]
        proto, _, rest = key.partition(" ")
        if proto == "FWM":
            mark, _, v6 = rest.partition(" ")
            svc = f"-f {mark}" + (" -6" if v6 else "")
        else:
            svc = {"TCP": "-t", "UDP": "-u", "SCTP": "--sctp-service"}[proto] + f" {rest}"
        line = f"-A {svc} -s {entry['sched']}"
        if entry["persistent"] is not None:
            line += f" -p {entry['persistent']}"
            if entry["netmask"]:
                line += f" -M {entry['netmask']}"
        if entry["flags"]:
            line += f" -b {entry['flags']}"
        if entry["ops"]:
            line += " -o"
        out.append(line)
        dests = entry["dests"]
        assert isinstance(dests, dict)
        for dest, (fwd, weight, _upper, _lower) in dests.items():
            out.append(f"-a {svc} -r {dest} {FORWARD_FLAG[str(fwd)]} -w {weight}")
    return "".join(line + "\n" for line in out)


def run_one(table: Table, args: list[str]) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of one command."""
    try:
        return 0, execute(table, parse(args)), ""
    except Refused as exc:
        return 255, "", f"{exc}\n"
    except BadSyntax as exc:
        return 2, "", f"{exc}\n"


def up_by_port(table: Table) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in table.values():
        dests = entry["dests"]
        assert isinstance(dests, dict)
        for dest, conf in dests.items():
            if conf[1] > 0:
                port = dest.rpartition(":")[2]
                counts[port] = counts.get(port, 0) + 1
    return counts


def main() -> int:
    started = time.time()
    state_dir = os.environ.get("LVSMON_FAKE_IPVSADM_DIR")
    if not state_dir:
        sys.stderr.write("fake ipvsadm: LVSMON_FAKE_IPVSADM_DIR is not set\n")
        return 2
    args = sys.argv[1:]
    table_path = os.path.join(state_dir, "table.json")
    with open(os.path.join(state_dir, "lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(table_path, encoding="utf-8") as f:
                table: Table = json.load(f)
        except FileNotFoundError:
            table = {}
        before = json.dumps(table, sort_keys=True)
        lines = 0
        if split_tokens(args)[:1] in (["-R"], ["--restore"]):
            rc, outs, errs = 0, [], []
            for raw in sys.stdin.read().splitlines():
                if not raw.strip():
                    continue
                lines += 1
                rc, out, err = run_one(table, raw.split())
                outs.append(out)
                errs.append(err)
                if rc == 2:
                    break
            stdout, stderr = "".join(outs), "".join(errs)
        else:
            rc, stdout, stderr = run_one(table, args)
        if json.dumps(table, sort_keys=True) != before:
            tmp = f"{table_path}.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(table, f)
            os.replace(tmp, table_path)
        record = {
            "t": started,
            "dt": round(time.time() - started, 6),
            "argv": args,
            "rc": rc,
            "lines": lines,
            "up": up_by_port(table),
        }
        with open(os.path.join(state_dir, "calls.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
    sys.stdout.write(stdout)
    sys.stderr.write(stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
