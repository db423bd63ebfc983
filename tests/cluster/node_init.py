"""PID 1 of one sandboxed cluster node: private state, real servers, corosync, pacemakerd.

Started by `tests.cluster.lab` as

    ip netns exec NETNS unshare --mount --pid --uts --ipc --fork --mount-proc \\
        --propagation private PYTHON node_init.py SPEC.json

so it runs in its own network, mount, pid, uts and ipc namespaces. Everything Pacemaker and
corosync keep on disk gets a private tmpfs here, which is why two nodes can run on one host and
why nothing outside the test's own directory is written (mounts made in this mount namespace are
invisible to the host). Killing this process (PID 1 of its pid namespace) kills every process of
the node at once: the test's power cut.

The spec (written by the lab) names the node, its state directory (corosync.conf, the seed CIB,
logs), the OCF agents to install under /usr/lib/ocf/resource.d/<provider>/ and the loopback ports
of the real servers.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
OCF_PROVIDERS = Path("/usr/lib/ocf/resource.d")


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} init: {message}", flush=True)


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def private_state(state: Path) -> None:
    """tmpfs over every directory corosync and Pacemaker write, logs bound to the state dir."""
    ha = pwd.getpwnam("hacluster")
    mount("-t", "tmpfs", "-o", "mode=755", "tmpfs", "/run")
    for d in ("/run/lock", "/run/crm"):
        os.makedirs(d, exist_ok=True)
    mount("-t", "tmpfs", "-o", "mode=1777", "tmpfs", "/dev/shm")  # libqb IPC ring buffers
    mount("-t", "tmpfs", "-o", "mode=755", "tmpfs", "/var/lib/pacemaker")
    for d in ("cib", "pengine", "blackbox", "cores"):
        path = Path("/var/lib/pacemaker", d)
        path.mkdir(mode=0o750)
        os.chown(path, ha.pw_uid, ha.pw_gid)
    # the seed: stonith off and a short dc-deadtime (else 20 s idle before anything starts);
    # pacemaker-based takes an unsigned cib.xml on its first start
    cib = Path("/var/lib/pacemaker/cib/cib.xml")
    shutil.copyfile(state / "cib.xml", cib)
    os.chown(cib, ha.pw_uid, ha.pw_gid)
    cib.chmod(0o600)
    mount("-t", "tmpfs", "-o", "mode=755", "tmpfs", "/var/lib/corosync")
    # /var/log of the node is the state dir's log/ (in the VM /var/log is an empty tmpfs; on the
    # host the test must not write the real /var/log)
    logs = state / "log"
    for d in ("pacemaker", "corosync"):
        (logs / d).mkdir(parents=True, exist_ok=True)
        os.chown(logs / d, ha.pw_uid, ha.pw_gid)
        (logs / d).chmod(0o770)
    mount("--bind", str(logs), "/var/log")
    mount("--bind", str(state / "corosync.conf"), "/etc/corosync/corosync.conf")


def install_agents(agents: dict[str, str]) -> None:
    """The test's agents next to the stock providers, in this mount namespace only.

    /usr/lib/ocf/resource.d becomes a tmpfs holding the stock provider directories (bound back
    from a view of the original taken first) plus one directory per test provider."""
    if not agents:
        return
    stock = Path("/run/ocf-stock")
    stock.mkdir()
    mount("--bind", str(OCF_PROVIDERS), str(stock))
    mount("-t", "tmpfs", "-o", "mode=755", "tmpfs", str(OCF_PROVIDERS))
    for provider in sorted(os.listdir(stock)):
        if (stock / provider).is_dir():
            (OCF_PROVIDERS / provider).mkdir()
            mount("--bind", str(stock / provider), str(OCF_PROVIDERS / provider))
    for spec, source in agents.items():
        provider, name = spec.split(":", 1)
        target = OCF_PROVIDERS / provider / name
        target.parent.mkdir(exist_ok=True)
        target.touch()
        mount("--bind", source, str(target))


def real_servers(ports: list[int]) -> None:
    """HTTP servers on this node's loopback, answering "ok" for /index.html."""
    www = Path("/run/www")
    www.mkdir()
    (www / "index.html").write_text("ok\n")
    # busybox's httpd when there is one (busybox-static, for the VM tests): a Python server
    # costs seconds of CPU to start under TCG, taken from the cluster being measured
    busybox = shutil.which("busybox")
    for port in ports:
        if busybox:
            cmd = [busybox, "httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", str(www)]
        else:
            cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
        spawn(cmd, Path(f"/run/www-{port}.log"), dict(os.environ), cwd=www)


def spawn(
    cmd: list[str], out: Path, env: dict[str, str], cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    with open(out, "wb") as f:  # the child has its own copy of the descriptor
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd)


def cluster_stack(state: Path, env: dict[str, str]) -> None:
    logs = state / "log"
    corosync = spawn(["corosync", "-f"], logs / "corosync.out", env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        probe = subprocess.run(["corosync-cfgtool", "-s"], capture_output=True, env=env)
        if probe.returncode == 0:
            break
        time.sleep(0.1)
    log(f"corosync {corosync.pid} answers")
    # pacemakerd stays in the foreground whatever its options; pacemaker-execd passes this
    # environment on to the resource agents
    pacemakerd = spawn(["pacemakerd"], logs / "pacemakerd.out", env)
    log(f"pacemakerd {pacemakerd.pid} started")


def reap_forever() -> None:
    """PID 1's duty: every orphan of the node (daemons the agents start) is reparented here."""
    while True:
        try:
            os.wait()
        except ChildProcessError:
            time.sleep(1)


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    state = Path(spec["state"])
    sys.stdout = sys.stderr = open(state / "log" / "init.log", "a", buffering=1)  # noqa: SIM115
    log(f"node {spec['node']} pid {os.getpid()}")
    socket.sethostname(spec["node"])
    private_state(state)
    install_agents(spec.get("agents", {}))
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    real_servers(spec.get("real_ports", []))
    env = {**os.environ, "PATH": SBIN_PATH, **spec.get("env", {})}
    cluster_stack(state, env)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    reap_forever()


if __name__ == "__main__":
    main()
