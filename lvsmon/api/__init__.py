"""The control surface of a running daemon: an aiohttp server on a root-only Unix socket (and,
when the operator asks, a loopback or other TCP address) that serves the status, the live event
stream, Prometheus metrics and the status page, and takes the operator's commands (plan, drain).

It reads the engine's state; it never owns or locks it, so a slow client costs the checks
nothing but the time to serialise what it asked for.
"""
