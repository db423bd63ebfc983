"""Every library lvsmon runs with may be shipped with it: lvsmon is GPL-2.0-or-later, so no
dependency (direct or transitive, the oracle extra included) may be GPL-3.0-only or AGPL, and a
new licence fails here until someone has read it and added it below (docs/architecture.md lists
the choices, e.g. why the imap check is hand-written rather than aioimaplib, GPL-3.0-only)."""

from __future__ import annotations

import re
from importlib import metadata

import pytest

# licence texts as packages declare them (License-Expression, License or classifier), normalised
# to lower case; each is compatible with distributing lvsmon under GPL-2.0-or-later (taking the
# GPLv3 option where Apache-2.0 or LGPL-3.0 need it)
ALLOWED = {
    "gpl-2.0-or-later": "lvsmon itself",
    "gpl-2.0-or-later or apache-2.0": "pyroute2",
    "mit": "permissive",
    "mit-0": "permissive",
    "bsd": "permissive",
    "bsd license": "permissive",
    "bsd-2-clause": "permissive",
    "bsd-3-clause": "permissive",
    "isc": "permissive",
    "psf-2.0": "permissive, GPL-compatible",
    "apache-2.0": "GPLv3-compatible: lvsmon's 'or later' allows it",
    "apache 2.0": "same as apache-2.0",
    "apache license": "aioftp's LICENSE text (Apache License 2.0)",
    "apache-2.0 and mit": "aiohttp",
    "apache-2.0 or bsd-3-clause": "cryptography (oracle extra)",
    "upl-1.0 or apache-2.0": "oracledb (oracle extra)",
    "lgpl v3": "ldap3: LGPL-3.0 library, fine for a GPL-2.0-or-later program (GPLv3 option)",
    # regex (since issue 8) declares its CPython-derived code as CNRI-Python; it is the licence
    # stack of Python itself, under which CPython ships with GPL programs
    "apache-2.0 and cnri-python": "regex",
}
FORBIDDEN = re.compile(r"\bagpl|gpl-3\.0-only|gplv3 only|proprietary|commercial", re.I)


def _licence(dist: metadata.Distribution) -> str:
    meta = dist.metadata
    text = meta["License-Expression"] or (meta["License"] or "").strip()
    if not text or len(text) > 60:  # some packages put their whole LICENSE file here
        first = text.splitlines()[0].strip() if text else ""
        classifiers = [c for c in (meta.get_all("Classifier") or []) if c.startswith("License")]
        text = first or (classifiers[0].rsplit("::", 1)[-1].strip() if classifiers else "")
    return text.lower()


def _tree(*roots: str) -> dict[str, str]:
    """name → licence for every installed distribution the roots need (extras not followed)."""
    seen: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # a marker excluded it on this platform
        seen[key] = _licence(dist)
        for req in dist.requires or []:
            if "extra ==" not in req:
                todo.append(re.split(r"[ ;<>=!~\[(]", req, maxsplit=1)[0])
    return seen


def test_the_dependency_tree_is_the_expected_size() -> None:
    tree = _tree("lvsmon", "oracledb")
    assert {"aiosmtplib", "dnspython", "asyncpg", "aiomysql", "pyrad", "aioftp", "ldap3"} <= set(
        tree
    )
    assert len(tree) >= 20


@pytest.mark.parametrize("name,licence", sorted(_tree("lvsmon", "oracledb").items()))
def test_every_dependency_may_ship_with_lvsmon(name: str, licence: str) -> None:
    assert not FORBIDDEN.search(licence), f"{name} is {licence}: not shippable with GPL-2.0+"
    assert licence in ALLOWED, f"{name} declares {licence!r}: read it, then add it to ALLOWED"


def test_aioimaplib_is_not_a_dependency() -> None:
    assert "aioimaplib" not in _tree("lvsmon", "oracledb")
