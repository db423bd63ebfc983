"""Well-known ports of ldirectord's negotiate services, both ways."""

from __future__ import annotations

from lvsmon.config.model import Service

SERVICE_PORTS: dict[Service, int] = {
    Service.FTP: 21,
    Service.SMTP: 25,
    Service.DNS: 53,
    Service.HTTP: 80,
    Service.POP: 110,
    Service.NNTP: 119,
    Service.IMAP: 143,
    Service.LDAP: 389,
    Service.HTTPS: 443,
    Service.SUBMISSION: 587,
    Service.LDAPS: 636,
    Service.IMAPS: 993,
    Service.POPS: 995,
    Service.ORACLE: 1521,
    Service.RADIUS: 1812,
    Service.HTTP_PROXY: 3128,
    Service.MYSQL: 3306,
    Service.SIP: 5060,
    Service.PGSQL: 5432,
}

PORT_SERVICES: dict[int, Service] = {port: svc for svc, port in SERVICE_PORTS.items()}


def service_for_port(port: int) -> Service:
    return PORT_SERVICES.get(port, Service.NONE)
