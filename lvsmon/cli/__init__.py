"""The lvsmon command line: ldirectord's commands and lvsmon's own, on top of everything else.

Nothing in lvsmon imports this package; `main` is re-exported for the `lvsmon.cli:main` entry point.
"""

from lvsmon.cli.dispatch import main

__all__ = ["main"]
