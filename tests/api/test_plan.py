"""`lvsmon plan` and POST /plan: the ops a reload would apply, from a running daemon (memory
backend, real HTTP servers on loopback) or from the kernel table without one; the plan equals
what the reload then does, and a plan changes nothing."""

from __future__ import annotations

import asyncio
import json
import typing
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from lvsmon.config import load_config
from lvsmon.daemon.daemon import Daemon
from lvsmon.ipvs.memory import MemoryBackend
from realservers.base import free_port
from tests.helpers import Web, lvsmon, wait_for


def config_text(log: Path, reals: str, extra: str = "") -> str:
    return (
        f'checktimeout=2\ncheckinterval=1\nlogfile="{log}"\n'
        f'virtual=127.0.0.100:80\n{reals}\tservice=http\n\trequest="/"\n'
        '\treceive="still alive"\n\tchecktype=negotiate\n'
        f"{extra}"
    )


def real_lines(ports: list[int], weights: list[int] | None = None) -> str:
    weights = weights or [1] * len(ports)
    return "".join(f"\treal=127.0.0.1:{p} masq {w}\n" for p, w in zip(ports, weights, strict=True))


async def run(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.to_thread(lvsmon, *args, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


async def post(sock: str, body: typing.Any, *, raw: bytes | None = None) -> tuple[int, typing.Any]:
    connector = aiohttp.UnixConnector(path=sock)
    kwargs: dict[str, typing.Any] = {"data": raw} if raw is not None else {"json": body}
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post("http://lvsmon/plan", **kwargs) as response,
    ):
        text = await response.text()
        return response.status, json.loads(text) if text.startswith("{") else text


# ---- POST /plan against an in-process daemon -------------------------------------------------


class InProcess(typing.NamedTuple):
    daemon: Daemon
    backend: MemoryBackend
    socket: str
    cfg: Path
    port: int


@pytest.fixture
async def inproc(tmp_path: Path, webs: list[Web]) -> AsyncIterator[InProcess]:
    cfg = tmp_path / "t.cf"
    cfg.write_text(config_text(tmp_path / "t.log", real_lines([w.port for w in webs[:2]])))
    sock, port = str(tmp_path / "t.sock"), free_port()
    backend = MemoryBackend()
    daemon = Daemon(load_config(str(cfg)), backend, control_socket=sock, listen=f"127.0.0.1:{port}")
    ready: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(daemon.run(ready.set_result))
    assert await ready is None
    yield InProcess(daemon, backend, sock, cfg, port)
    daemon.request_stop()
    assert await task == 0


async def test_post_plan_answers_the_ops_and_changes_nothing(
    inproc: InProcess, webs: list[Web], tmp_path: Path
) -> None:
    engine = inproc.daemon.engine
    await wait_for(lambda: engine.first_round_done)
    config, plan, actual = engine.config, engine.plan, engine.actual
    health, log = dict(engine.health), list(inproc.backend.log)
    applied, published = engine.stats.ops_applied, inproc.daemon.events.published

    new = tmp_path / "new.cf"
    ports = [w.port for w in webs]
    new.write_text(config_text(tmp_path / "t.log", real_lines(ports[:1], [4])))
    status, body = await post(inproc.socket, {"file": str(new)})
    assert status == 200
    assert body["config"] == str(new)
    assert body["changes"] == 2
    assert body["ops"] == [
        {
            "kind": "EditDest",
            "virtual": "tcp:127.0.0.100:80",
            "real": f"127.0.0.1:{ports[0]}",
            "ipvsadm": f"-e -t 127.0.0.100:80 -r 127.0.0.1:{ports[0]} -m -w 4 -x 0 -y 0",
            "text": f"Restored real server: 127.0.0.1:{ports[0]} (127.0.0.100:80) "
            "(Weight set to 4)",
        },
        {
            "kind": "DeleteDest",
            "virtual": "tcp:127.0.0.100:80",
            "real": f"127.0.0.1:{ports[1]}",
            "ipvsadm": f"-d -t 127.0.0.100:80 -r 127.0.0.1:{ports[1]}",
            "text": f"Deleted real server: 127.0.0.1:{ports[1]} (127.0.0.100:80)",
        },
    ]
    # without a file: the running config's file as it is now (unchanged: nothing to do)
    assert await post(inproc.socket, None) == (
        200,
        {"config": str(inproc.cfg), "ops": [], "changes": 0},
    )
    # nothing moved: no kernel write, no reload, no event
    assert engine.config is config and engine.plan is plan and engine.actual is actual
    assert engine.health == health and inproc.backend.log == log
    assert engine.stats.ops_applied == applied
    assert inproc.daemon.events.published == published


async def test_post_plan_sees_the_drains_of_the_new_config(
    inproc: InProcess, webs: list[Web], tmp_path: Path
) -> None:
    """A real drained in every virtual is drained in a virtual the new file adds: the plan
    adds it at weight 0, as the reload will."""
    port = webs[0].port
    await inproc.daemon.drain_command(f"127.0.0.1:{port}", None, True)
    new = tmp_path / "new.cf"
    new.write_text(
        inproc.cfg.read_text()
        + f"virtual=127.0.0.101:80\n\treal=127.0.0.1:{port} masq 5\n\tchecktype=on\n"
    )
    status, body = await post(inproc.socket, {"file": str(new)})
    assert status == 200
    assert [op["ipvsadm"] for op in body["ops"]] == [
        "-A -t 127.0.0.101:80 -s wrr",
        f"-a -t 127.0.0.101:80 -r 127.0.0.1:{port} -m -w 0 -x 0 -y 0",
    ]


async def test_post_plan_refuses_what_a_reload_refuses(inproc: InProcess, tmp_path: Path) -> None:
    bad = tmp_path / "bad.cf"
    bad.write_text("virtual=127.0.0.100:80\n\treal=127.0.0.1:1 masq\n\tbogus=1\n")
    status, body = await post(inproc.socket, {"file": str(bad)})
    assert status == 422
    assert any(line.startswith(f"{bad}:3: ") for line in body["errors"]), body
    empty = tmp_path / "empty.cf"
    empty.write_text("")
    status, body = await post(inproc.socket, {"file": str(empty)})
    assert (status, body["errors"]) == (422, [f"{empty}: file is empty: a reload refuses it"])
    status, body = await post(inproc.socket, {"file": str(tmp_path / "missing.cf")})
    assert status == 422 and "no such file" in body["errors"][0]
    assert (await post(inproc.socket, {"file": "relative.cf"}))[0] == 400
    assert (await post(inproc.socket, None, raw=b"{not json"))[0] == 400


async def test_plan_is_refused_over_tcp(inproc: InProcess) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{inproc.port}/plan", json={}) as response,
    ):
        assert response.status == 403


# ---- the command line against a daemon process -------------------------------------------------


async def read_events_until(
    response: aiohttp.ClientResponse, until: typing.Callable[[dict[str, typing.Any]], bool]
) -> list[dict[str, typing.Any]]:
    seen: list[dict[str, typing.Any]] = []
    async with asyncio.timeout(30):
        async for raw in response.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
                if until(seen[-1]):
                    return seen
    raise AssertionError(f"stream ended; saw {seen}")


async def test_cli_plan_is_what_the_reload_then_does(webs: list[Web], tmp_path: Path) -> None:
    cf, log, pid = tmp_path / "lb.cf", tmp_path / "lb.log", tmp_path / "lb.pid"
    sock = str(tmp_path / "lb.sock")
    ports = [w.port for w in webs]
    cf.write_text(config_text(log, real_lines(ports[:2])))
    assert (await run("--backend", "memory", "--pid-file", str(pid), str(cf), "start"))[0] == 0
    try:
        # the file as it is: nothing to do
        assert await run("--pid-file", str(pid), "plan", str(cf)) == (0, "no change\n", "")

        # weight up, one real gone, one added whose check fails (it stays out), a new virtual
        # that needs no check (in at once), quiescent on
        dead = free_port()
        new = tmp_path / "new.cf"
        new.write_text(
            config_text(
                log,
                real_lines([ports[0], dead], [3, 1]) + "\tquiescent=yes\n",
                f"virtual=127.0.0.101:80\n\treal=127.0.0.1:{ports[2]} masq 2\n\tchecktype=on\n",
            )
        )
        rc, out, err = await run("--pid-file", str(pid), "plan", str(cf), str(new))
        assert (rc, err) == (1, "")
        lines = out.splitlines()
        assert lines[-1] == "4 changes"
        assert lines[0].startswith(
            f"-e -t 127.0.0.100:80 -r 127.0.0.1:{ports[0]} -m -w 3 -x 0 -y 0 "
        )
        assert lines[0].endswith(
            f"# Restored real server: 127.0.0.1:{ports[0]} (127.0.0.100:80) (Weight set to 3)"
        )
        # the same as JSON, options after the word `plan`
        rc, out, _ = await run("plan", "--json", "--pid-file", str(pid), str(cf), str(new))
        planned = json.loads(out)
        assert rc == 1 and planned["changes"] == 4 and planned["source"].startswith("daemon")
        assert [op["kind"] for op in planned["ops"]] == [
            "EditDest",
            "DeleteDest",
            "AddService",
            "AddDest",
        ]

        # the reload: the kernel ops it applies, from the daemon's event stream
        connector = aiohttp.UnixConnector(path=sock)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get("http://lvsmon/events") as response,
        ):
            await read_events_until(response, lambda e: e.get("phase") == "running")
            cf.write_text(new.read_text())
            assert (await run("--pid-file", str(pid), str(cf), "reload"))[0] == 0
            events = await read_events_until(response, lambda e: e["type"] == "ConfigLoaded")
        done = [
            {**e["op"], "text": e["text"]}
            for e in events
            if e["type"] == "KernelOp" and e["error"] is None
        ]
        assert done == planned["ops"]
        # and now there is nothing left to do
        assert await run("--pid-file", str(pid), "plan", str(cf)) == (0, "no change\n", "")

        # a broken file: trouble, in file:line words, and the daemon keeps running
        bad = tmp_path / "bad.cf"
        bad.write_text(new.read_text() + "\tbogus=1\n")
        rc, out, err = await run("--pid-file", str(pid), "plan", str(cf), str(bad))
        assert rc == 2 and out == ""
        assert err.startswith(f"{bad}:") and "bogus" in err
        assert (await run("--pid-file", str(pid), str(cf), "status"))[0] == 0
    finally:
        assert (await run("--pid-file", str(pid), str(cf), "stop"))[0] == 0


# ---- without a daemon ---------------------------------------------------------------------------


async def test_cli_plan_without_a_daemon_reads_the_kernel_table(tmp_path: Path) -> None:
    cf, pid = tmp_path / "lb.cf", tmp_path / "lb.pid"
    (tmp_path / "lb.sock").write_text("left by a crashed daemon")  # answers nothing
    cf.write_text(
        config_text(tmp_path / "lb.log", real_lines([free_port()]))
        + "virtual=127.0.0.101:80\n\treal=127.0.0.1:8080 masq 2\n\tchecktype=on\n"
    )
    base = ("--backend", "memory", "--pid-file", str(pid), "plan")
    rc, out, err = await run(*base, str(cf))
    # the memory backend starts empty: every service is an add; the negotiate real is not in
    # before its first check, the always-up one is
    assert rc == 1
    assert err == (
        f"lvsmon: no daemon answers on {tmp_path / 'lb.sock'}: planned from the kernel table "
        "(memory backend)\n"
    )
    *lines, summary = out.splitlines()
    assert [tuple(part.strip() for part in line.split("#")) for line in lines] == [
        ("-A -t 127.0.0.100:80 -s wrr", "Added virtual server: 127.0.0.100:80"),
        ("-A -t 127.0.0.101:80 -s wrr", "Added virtual server: 127.0.0.101:80"),
        (
            "-a -t 127.0.0.101:80 -r 127.0.0.1:8080 -m -w 2 -x 0 -y 0",
            "Added real server: 127.0.0.1:8080 (127.0.0.101:80) (Weight set to 2)",
        ),
    ]
    assert summary == "3 changes"
    assert len({line.index("#") for line in lines}) == 1  # the comments line up
    rc, out, _ = await run(*base, "--json", str(cf))
    assert rc == 1 and json.loads(out)["source"] == "kernel (memory backend)"

    nothing = tmp_path / "none.cf"
    nothing.write_text("checktimeout=2\n")  # no virtual service: nothing to add
    assert (await run(*base, str(nothing)))[:2] == (0, "no change\n")
    rc, out, err = await run(*base, str(cf), str(tmp_path / "missing.cf"))
    assert (rc, out) == (2, "") and "missing.cf: cannot read configuration file" in err
    rc, _, err = await run(*base, str(tmp_path / "nowhere.cf"))
    assert rc == 2 and "not found" in err
    rc, _, err = await run(*base, "a.cf", "b.cf", "c.cf")  # usage: argparse's 2
    assert rc == 2 and "usage" in err


# ---- the proof: one line of 10,000 reals -----------------------------------------------


def big_config(log: Path, weight_of_last: int = 1) -> str:
    """100 virtuals of 100 reals each on 127.x addresses; checktype=on: no check loads the
    host, every real is in."""
    parts = [f'logfile="{log}"\n']
    for v in range(100):
        parts.append(f"virtual=127.1.{v}.1:80\n\tchecktype=on\n\tscheduler=wlc\n")
        for r in range(100):
            weight = weight_of_last if (v, r) == (99, 99) else 1
            parts.append(f"\treal=127.2.{v}.{r + 1}:8080 masq {weight}\n")
    return "".join(parts)


async def test_a_one_line_change_of_10000_reals_plans_one_op(tmp_path: Path) -> None:
    cf, pid, log = tmp_path / "big.cf", tmp_path / "big.pid", tmp_path / "big.log"
    cf.write_text(big_config(log))
    new = tmp_path / "new.cf"
    new.write_text(big_config(log, weight_of_last=5))
    assert (
        sum(
            a != b
            for a, b in zip(cf.read_text().splitlines(), new.read_text().splitlines(), strict=True)
        )
        == 1
    )
    rc, _, err = await run("--backend", "memory", "--pid-file", str(pid), str(cf), "start")
    assert (rc, err) == (0, "")
    try:
        rc, out, err = await run("--pid-file", str(pid), "plan", str(cf), str(new))
        assert (rc, err) == (1, "")
        assert out.splitlines() == [
            "-e -t 127.1.99.1:80 -r 127.2.99.100:8080 -m -w 5 -x 0 -y 0   "
            "# Restored real server: 127.2.99.100:8080 (127.1.99.1:80) (Weight set to 5)",
            "1 change",
        ]
        assert await run("--pid-file", str(pid), "plan", str(cf)) == (0, "no change\n", "")
    finally:
        assert (await run("--pid-file", str(pid), str(cf), "stop"))[0] == 0


async def test_a_config_named_plan_is_still_the_ldirectord_form(tmp_path: Path) -> None:
    rc, out, _ = await run("--pid-file", str(tmp_path / "x.pid"), "plan", "status")
    assert (rc, out) == (3, "lvsmon is stopped for plan\n")
