"""Applying ops to a table the way the kernel would: a pure function.

It is the memory backend's engine and the oracle of the diff's property tests. Each op stands
alone, as in the kernel and in `ipvsadm -R`: a failed op changes nothing and does not stop the
ops after it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from lvsmon.ipvs.errors import ErrorKind, OpError, OpResult
from lvsmon.ipvs.model import Service, Table, kernel_dest_port
from lvsmon.ipvs.ops import (
    AddDest,
    AddService,
    DeleteService,
    EditDest,
    EditService,
    Op,
)
from lvsmon.ipvs.rules import InvalidConf, canonical_service_conf, check_op


def copy_table(table: Table) -> Table:
    return {
        key: Service(svc.conf, dict(svc.dests), copy.copy(svc.stats)) for key, svc in table.items()
    }


def apply_op(table: Table, op: Op) -> OpError | None:
    """Apply one op to `table` in place; on error the table is left unchanged."""
    try:
        check_op(op)
    except InvalidConf as exc:
        return OpError(ErrorKind.INVALID, str(exc))

    if isinstance(op, AddService):
        if op.service in table:
            return OpError(ErrorKind.EXISTS, f"service {op.service} already exists")
        table[op.service] = Service(canonical_service_conf(op.service, op.conf))
        return None

    svc = table.get(op.service)
    if svc is None:
        return OpError(ErrorKind.NOT_FOUND, f"no such service {op.service}")

    if isinstance(op, EditService):
        svc.conf = canonical_service_conf(op.service, op.conf)
    elif isinstance(op, DeleteService):
        del table[op.service]
    elif isinstance(op, AddDest):
        dest = kernel_dest_port(op.service, op.dest, op.conf.forward)
        if dest in svc.dests:
            return OpError(ErrorKind.EXISTS, f"destination {dest} already exists in {op.service}")
        svc.dests[dest] = op.conf
    elif isinstance(op, EditDest):
        dest = kernel_dest_port(op.service, op.dest, op.conf.forward)
        if dest not in svc.dests:
            return OpError(ErrorKind.NOT_FOUND, f"no such destination {dest} in {op.service}")
        svc.dests[dest] = op.conf
    else:
        if op.dest not in svc.dests:
            return OpError(ErrorKind.NOT_FOUND, f"no such destination {op.dest} in {op.service}")
        del svc.dests[op.dest]
        svc.stats.pop(op.dest, None)
    return None


def apply_ops(table: Table, ops: Sequence[Op]) -> tuple[Table, list[OpResult]]:
    """A new table with `ops` applied in order, and one result per op; `table` is untouched."""
    result = copy_table(table)
    return result, [OpResult(op, apply_op(result, op)) for op in ops]
