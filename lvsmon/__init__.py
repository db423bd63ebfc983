"""lvsmon: health checker for Linux Virtual Server, compatible with ldirectord.cf."""

__version__ = "0.1.0"
