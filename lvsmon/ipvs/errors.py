"""Why an IPVS operation or a whole backend call failed: the leaf every backend, sync and
caller imports (it imports nothing of lvsmon but the op it reports on, and the text rule)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from lvsmon.ipvs.ops import Op
from lvsmon.text import clean


class ErrorKind(enum.StrEnum):
    """Why an operation or a dump failed, in terms an operator can act on."""

    EXISTS = "exists"  # EEXIST: the service or destination is already there
    NOT_FOUND = "not-found"  # ENOENT / ESRCH: it is not there
    PERMISSION = "permission"  # EPERM / EACCES: not root / no CAP_NET_ADMIN
    NO_IPVS = "no-ipvs"  # the kernel has no IPVS (module not loaded / not built)
    INVALID = "invalid"  # EINVAL and friends: e.g. unknown scheduler
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class OpError:
    kind: ErrorKind
    message: str  # the kernel's or tool's own words, made clean (lvsmon.text) on the way in

    def __post_init__(self) -> None:
        # ipvsadm's stderr and a sync daemon's words reach the log, mails and /events: outside
        # text (issue 21, class 6), so it is made safe where it enters, not where it is shown
        object.__setattr__(self, "message", clean(self.message))


@dataclass(frozen=True, slots=True)
class OpResult:
    op: Op
    error: OpError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class BackendError(Exception):
    """A whole call failed (e.g. dump() without IPVS); carries a typed reason."""

    def __init__(self, error: OpError) -> None:
        super().__init__(f"{error.kind}: {error.message}")
        self.error = error
