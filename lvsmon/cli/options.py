"""The options every lvsmon command line shares (the main one, `lvsmon plan`): how to reach IPVS
and where the daemon's pid file is, each with its environment default."""

from __future__ import annotations

import argparse
import os

BACKENDS = ("netlink", "ipvsadm", "memory")


def add_backend_options(
    parser: argparse.ArgumentParser, *, backend_help: str, pid_file_help: str
) -> None:
    """--backend ($LVSMON_BACKEND, else netlink), --ipvsadm ($LVSMON_IPVSADM), --pid-file
    ($LVSMON_PIDFILE)."""
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=os.environ.get("LVSMON_BACKEND") or "netlink",
        help=backend_help,
    )
    parser.add_argument(
        "--ipvsadm",
        default=os.environ.get("LVSMON_IPVSADM"),
        help="ipvsadm binary for --backend ipvsadm",
    )
    parser.add_argument("--pid-file", default=os.environ.get("LVSMON_PIDFILE"), help=pid_file_help)
