"""ldirectord.cf: parser, typed effective model, validation.

from lvsmon.config import load_config, ConfigError
config = load_config("/etc/ha.d/ldirectord.cf")   # raises ConfigError(diagnostics)
"""

from lvsmon.config.errors import ConfigError, Diagnostic
from lvsmon.config.load import load_config, parse_config
from lvsmon.config.model import (
    CheckType,
    Config,
    Fallback,
    GlobalFallback,
    GlobalSettings,
    HttpMethod,
    Real,
    Service,
    Virtual,
    VirtualProtocol,
)

__all__ = [
    "CheckType",
    "Config",
    "ConfigError",
    "Diagnostic",
    "Fallback",
    "GlobalFallback",
    "GlobalSettings",
    "HttpMethod",
    "Real",
    "Service",
    "Virtual",
    "VirtualProtocol",
    "load_config",
    "parse_config",
]
