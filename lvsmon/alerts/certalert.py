"""The certificate expiry mails (issue 25 point 4, sslexpirywarn; lvsmon's own: ldirectord has
no such alert): one change per CertificateExpiring event, to its virtual's `emailalert`
recipients, batched and rate limited like every other change (alerts/policy.py). The event
comes at most once a day per real (engine/certexpiry.py), so the mail does too."""

from __future__ import annotations

from lvsmon.alerts.changes import Change
from lvsmon.engine.certexpiry import expiry_text
from lvsmon.engine.events import CertificateExpiring


def cert_change(event: CertificateExpiring, at: float) -> Change:
    return Change("cert", expiry_text(event), event.ref.service, str(event.ref.dest), at)
