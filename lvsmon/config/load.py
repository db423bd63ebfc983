"""The entry points: text or a file → Config, or ConfigError holding every diagnostic."""

from __future__ import annotations

import hashlib

from lvsmon.config.effective import build_config
from lvsmon.config.errors import ConfigError, Diagnostic
from lvsmon.config.model import Config
from lvsmon.config.parser import parse_lines
from lvsmon.config.resolve import Resolver, SystemResolver
from lvsmon.config.support import unsupported


def parse_config(
    text: str | bytes,
    path: str,
    *,
    resolver: Resolver | None = None,
    hostname: str | None = None,
    check_support: bool = True,
) -> Config:
    """Parse ldirectord.cf content. ``path`` is only used in diagnostics and kept in the Config.

    Raises ConfigError with all errors of the file. With ``check_support`` (the default) a
    virtual whose check lvsmon does not implement is an error too.
    """
    data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")
    digest = hashlib.sha256(data).hexdigest()
    raw = parse_lines(data, path)
    config, errors, _warnings = build_config(raw, digest, resolver or SystemResolver(), hostname)
    if config is None:
        raise ConfigError(_sorted(errors))
    if check_support and (problems := unsupported(config)):
        raise ConfigError(_sorted(problems))
    return config


def read_config_bytes(path: str) -> bytes:
    """The file's bytes, or ConfigError naming the file (missing, unreadable, a directory)."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except IsADirectoryError:
        reason = "is a directory"
    except FileNotFoundError:
        reason = "no such file"
    except PermissionError:
        reason = "permission denied"
    except OSError as exc:
        reason = exc.strerror or str(exc)
    raise ConfigError([Diagnostic(path, None, f"cannot read configuration file: {reason}")])


def load_config(
    path: str, *, resolver: Resolver | None = None, check_support: bool = True
) -> Config:
    """Read and parse a configuration file; the digest is of exactly the bytes parsed."""
    return parse_config(
        read_config_bytes(path), path, resolver=resolver, check_support=check_support
    )


def _sorted(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    return sorted(diagnostics, key=lambda d: d.line or 0)
