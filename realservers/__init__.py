"""Real protocol servers (Postfix, Dovecot, slapd, dnsmasq, FreeRADIUS, MariaDB, PostgreSQL,
Kamailio, INN, ProFTPD, socat) started on loopback, on free ports, with throwaway state under
/var/tmp: the check tests' fixtures (tests/checks) and the protocol benchmark's servers
(bench/protocols.py), one home for both so that bench/ imports nothing from tests/."""
