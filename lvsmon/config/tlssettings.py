"""The TLS verification settings of the checks as the model holds them (config/tlsconf.py
parses them; checks/tlsverify.py does the verifying). A leaf: model.py imports it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class TlsCheck:
    """sslverify, sslcafile, sslname, sslexpirywarn: a virtual's effective values, or the
    global ones (each virtual's default)."""

    verify: str = "no"  # no | chain | name
    cafile: str = ""  # "": the system store
    name: str = ""  # "": virtualhost, else the real's address
    expirywarn: int = 0  # days; 0: off


NO_TLS: Final = TlsCheck()
