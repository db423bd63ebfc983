"""What a routing daemon is told: the VIPs this director announces (issue 24).

Two speakers, both driven, neither written here (lvsmon is no BGP speaker):
- kernel.py: routes in a kernel table of lvsmon's own, which BIRD 2 (or FRR) learns and
  exports (`bgp = bird`);
- exabgp.py: an ExaBGP child process and its text API (`bgp = exabgp`).

The decision of what to announce is engine/announce.py's; this package knows no health.
"""
