"""Certificates of every kind a TLS check must tell apart, made by openssl, and real servers
(nginx for https, Dovecot for imaps and pops) presenting each of them (issue 25, point 4).

`make_certs(directory)` makes a test CA and, per KIND, a certificate and key:

* good: signed by the CA, for NAME, valid 30 days;
* expired: signed by the CA, for NAME, valid from 2020-01-01 to 2021-01-01 (`openssl ca
  -startdate -enddate`);
* selfsigned: for NAME, signed by its own key;
* wrongname: signed by the CA, for OTHER_NAME;
* expiring: signed by the CA, for NAME, valid EXPIRING_DAYS days.

`running_nginx(certs)`: one nginx, a TLS port per kind (`Server.ports[kind]`), answering 200.
`running_dovecot(certs)`: one Dovecot; the kind's certificate is served on the loopback
address `ADDRESSES[kind]` (Dovecot's `local` blocks: pops and imaps send no SNI), the ports
being `Server.ports["imaps"]`, `["pop3s"]`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from realservers import dovecot as dovecot_module
from realservers.base import Server, free_ports, require, run, server_dir, wait_tcp

NAME: Final = "www.lvsmon.test"
OTHER_NAME: Final = "www.other.test"
EXPIRING_DAYS: Final = 3
KINDS: Final = ("good", "expired", "selfsigned", "wrongname", "expiring")
ADDRESSES: Final = {kind: f"127.0.0.{10 + i}" for i, kind in enumerate(KINDS)}

CA_CONF = """\
[ ca ]
default_ca = lvsmon_ca
[ lvsmon_ca ]
database = {dir}/index.txt
new_certs_dir = {dir}/issued
serial = {dir}/serial
default_md = sha256
policy = anything
copy_extensions = copy
unique_subject = no
email_in_dn = no
[ anything ]
commonName = supplied
"""


def _key_and_request(d: Path, kind: str, name: str) -> tuple[Path, Path]:
    key, csr = d / f"{kind}.key", d / f"{kind}.csr"
    run(
        [
            "openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-addext", f"subjectAltName=DNS:{name}", "-keyout", str(key), "-out", str(csr),
        ]
    )  # fmt: skip
    return key, csr


def make_certs(d: Path) -> dict[str, tuple[Path, Path]]:
    """The CA (`d/ca.pem`) and, per kind, (certificate, key); readable by every user."""
    require("openssl", "openssl")
    d.mkdir(exist_ok=True)
    d.chmod(0o755)
    (d / "issued").mkdir()
    (d / "index.txt").write_text("")
    (d / "serial").write_text("1000\n")
    conf = d / "ca.cnf"
    conf.write_text(CA_CONF.format(dir=d))
    ca, ca_key = d / "ca.pem", d / "ca.key"
    run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
            "-subj", "/CN=lvsmon test CA", "-keyout", str(ca_key), "-out", str(ca),
        ]
    )  # fmt: skip
    certs: dict[str, tuple[Path, Path]] = {}
    dates = {
        "good": ["-days", "30"],
        "expired": ["-startdate", "20200101000000Z", "-enddate", "20210101000000Z"],
        "wrongname": ["-days", "30"],
        "expiring": ["-days", str(EXPIRING_DAYS)],
    }
    for kind, when in dates.items():
        key, csr = _key_and_request(d, kind, OTHER_NAME if kind == "wrongname" else NAME)
        cert = d / f"{kind}.pem"
        run(
            [
                "openssl", "ca", "-batch", "-notext", "-config", str(conf), "-cert", str(ca),
                "-keyfile", str(ca_key), "-in", str(csr), "-out", str(cert), *when,
            ]
        )  # fmt: skip
        certs[kind] = (cert, key)
    key, cert = d / "selfsigned.key", d / "selfsigned.pem"
    run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
            "-subj", f"/CN={NAME}", "-addext", f"subjectAltName=DNS:{NAME}",
            "-keyout", str(key), "-out", str(cert),
        ]
    )  # fmt: skip
    certs["selfsigned"] = (cert, key)
    for path in d.iterdir():
        if path.is_file():
            path.chmod(0o644)
    return certs


NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log error;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir};
    proxy_temp_path {dir};
    fastcgi_temp_path {dir};
    uwsgi_temp_path {dir};
    scgi_temp_path {dir};
{servers}
}}
"""

NGINX_SERVER = """\
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{ return 200 "still alive\\n"; }}
    }}
"""


@contextlib.contextmanager
def running_nginx(certs: dict[str, tuple[Path, Path]]) -> Iterator[Server]:
    """nginx with one TLS port per kind of certificate (`Server.ports[kind]`)."""
    binary = require("nginx", "nginx")
    with server_dir("nginx-tls") as d:
        ports = dict(zip(certs, free_ports(len(certs)), strict=True))
        servers = "".join(
            NGINX_SERVER.format(port=ports[kind], cert=cert, key=key)
            for kind, (cert, key) in certs.items()
        )
        conf = d / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=d, servers=servers))
        with open(d / "stderr", "wb") as stderr:
            popen = subprocess.Popen(
                [binary, "-c", str(conf), "-p", str(d), "-e", str(d / "error.log")],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        server = Server("nginx", popen.pid, d, popen=popen, ports=ports)
        try:
            for port in ports.values():
                wait_tcp("127.0.0.1", port, proc=popen)
        except BaseException as exc:
            server.kill()
            text = (d / "stderr").read_text(errors="replace")
            raise RuntimeError(f"nginx did not start: {text}") from exc
        try:
            yield server
        finally:
            server.stop()


DOVECOT_LOCAL = """\
local {address} {{
  ssl_cert = <{cert}
  ssl_key = <{key}
}}
"""


@contextlib.contextmanager
def running_dovecot(certs: dict[str, tuple[Path, Path]]) -> Iterator[Server]:
    """Dovecot serving each kind's certificate on ADDRESSES[kind] (imaps, pop3s and the plain
    ports; realservers/dovecot.py's users)."""
    binary = require("dovecot", dovecot_module.PACKAGES)
    with server_dir("dovecot-tls") as d:
        names = dovecot_module.PORT_NAMES
        ports = dict(zip(names, free_ports(len(names)), strict=True))
        for sub in ("run", "state", "tls"):
            (d / sub).mkdir()
        (d / "tls").chmod(0o755)
        shutil.copy(certs["good"][0], d / "tls" / "cert.pem")
        shutil.copy(certs["good"][1], d / "tls" / "key.pem")
        home = d / "home"
        home.mkdir()
        nobody = dovecot_module.NOBODY
        os.chown(home, nobody, nobody)
        (d / "users").write_text(
            "".join(
                f"{u}:{{PLAIN}}{p}:{nobody}:{nobody}::{home}\n"
                for u, p in dovecot_module.USERS.items()
            ),
            encoding="utf-8",
        )
        listen = ", ".join(ADDRESSES[kind] for kind in certs)
        config = dovecot_module.CONFIG.format(dir=d, listen=listen, **ports) + "".join(
            DOVECOT_LOCAL.format(address=ADDRESSES[kind], cert=cert, key=key)
            for kind, (cert, key) in certs.items()
        )
        (d / "dovecot.conf").write_text(config)
        with open(d / "stderr", "wb") as stderr:
            popen = subprocess.Popen(
                [binary, "-F", "-c", str(d / "dovecot.conf")],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        server = Server("dovecot", popen.pid, d, popen=popen, ports=ports)
        try:
            for kind in certs:
                wait_tcp(ADDRESSES[kind], ports["imaps"], proc=popen)
                wait_tcp(ADDRESSES[kind], ports["pop3s"], proc=popen)
        except BaseException as exc:
            server.kill()
            text = "\n".join(
                (d / n).read_text(errors="replace")
                for n in ("stderr", "dovecot.log")
                if (d / n).exists()
            )
            raise RuntimeError(f"dovecot did not start: {text}") from exc
        try:
            yield server
        finally:
            server.stop()
