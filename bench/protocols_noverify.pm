# Loaded into ldirectord by bench/protocols.py (PERL5LIB=bench PERL5OPT=-Mprotocols_noverify) for
# its TLS services only. ldirectord means not to verify certificates (LWP's verify_hostname => 0),
# but IO::Socket::SSL 2.x verifies the chain by default, so on Debian 12 its https, pops, imaps
# and ldaps checks mark every real with a self-signed certificate down. lvsmon does not verify
# either; this makes ldirectord do the whole check too, as it was meant to.
package protocols_noverify;
use strict;
use warnings;
use IO::Socket::SSL;
IO::Socket::SSL::set_defaults(SSL_verify_mode => IO::Socket::SSL::SSL_VERIFY_NONE());
1;
