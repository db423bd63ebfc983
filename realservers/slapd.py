"""OpenLDAP slapd for the ldap/ldaps checks: a throwaway mdb database, ldap:// and ldaps://.

The directory holds dc=lvsmon,dc=test, ou=people and uid=lvsmon (password "secret", bindable;
userPassword is auth-only, everything else readable anonymously). slapd forks and writes its pid
file; it stops on SIGTERM in well under a second.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from realservers.base import (
    Server,
    free_ports,
    read_pid,
    require,
    run,
    self_signed,
    server_dir,
    wait_tcp,
)

SUFFIX = "dc=lvsmon,dc=test"
PEOPLE = f"ou=people,{SUFFIX}"
USER_DN = f"uid=lvsmon,{PEOPLE}"
PASSWORD = "secret"

_CONF = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile  {dir}/slapd.pid
argsfile {dir}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
TLSCertificateFile    {cert}
TLSCertificateKeyFile {key}
database mdb
maxsize 10485760
suffix "{suffix}"
rootdn "cn=admin,{suffix}"
rootpw {password}
directory {dir}/db
access to attrs=userPassword by anonymous auth by * none
access to * by * read
"""

_DATA = f"""\
dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
dc: lvsmon
o: lvsmon test

dn: {PEOPLE}
objectClass: organizationalUnit
ou: people

dn: {USER_DN}
objectClass: inetOrgPerson
uid: lvsmon
cn: lvsmon check user
sn: check
userPassword: {PASSWORD}
"""


def _url(scheme: str, addr: str, port: int) -> str:
    return f"{scheme}://[{addr}]:{port}/" if ":" in addr else f"{scheme}://{addr}:{port}/"


def _loopback(addr: str) -> str:
    """Where to poll a listener bound to `addr` (a wildcard is polled on loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(addr, addr)


@contextlib.contextmanager
def running_slapd(addrs: Sequence[str] = ("127.0.0.1", "::1")) -> Iterator[Server]:
    """slapd listening on ldap:// and ldaps:// at every address in `addrs`; ports in
    `Server.ports["ldap"]` and `["ldaps"]`."""
    slapd = require("slapd", "slapd")
    slapadd = require("slapadd", "slapd")
    with server_dir("slapd") as d:
        ldap_port, ldaps_port = free_ports(2)
        cert, key = self_signed(d, "ldap.lvsmon.test")
        (d / "db").mkdir()
        conf = d / "slapd.conf"
        conf.write_text(_CONF.format(dir=d, cert=cert, key=key, suffix=SUFFIX, password=PASSWORD))
        data = d / "data.ldif"
        data.write_text(_DATA)
        run([slapadd, "-q", "-f", str(conf), "-l", str(data)])
        urls = " ".join(
            _url(scheme, addr, port)
            for addr in addrs
            for scheme, port in (("ldap", ldap_port), ("ldaps", ldaps_port))
        )
        run([slapd, "-f", str(conf), "-h", urls])  # returns once the daemon has forked
        server = Server("slapd", read_pid(d / "slapd.pid"), d)
        server.ports = {"ldap": ldap_port, "ldaps": ldaps_port}
        try:
            for addr in addrs:
                wait_tcp(_loopback(addr), ldap_port)
                wait_tcp(_loopback(addr), ldaps_port)
            yield server
        finally:
            server.stop()
