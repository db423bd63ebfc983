"""The lab's readers of kernel and client output, on the host (no VM): a misread table would make
the lab's assertions meaningless."""

from __future__ import annotations

from tests.lab.netlab import classify, parse_proc_ip_vs, save_services, save_weights

# /proc/net/ip_vs as kernel 6.1 formats it (ip_vs_info_seq_show), IPv4, IPv6 and fwmark services
PROC = """\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port Forward Weight ActiveConn InActConn
TCP  0A0A0064:0050 wlc 
  -> 0A14000D:0050      Masq    1      0          0         
  -> 0A14000B:0050      Masq    0      2          7         
  -> 7F000001:0050      Local   1      0          0         
TCP  [2001:0db8:0000:0000:0000:0000:0000:0001]:0050 rr 
  -> [2001:0db8:0000:0000:0000:0000:0000:0002]:0050      Masq    1      0          0         
FWM  00000007 wlc 
  -> 0A14000C:0000      Route   1      0          0         
TCP  0A0A0064:1F90 wlc 
"""  # noqa: W291 - the kernel pads with trailing spaces


def test_proc_table_ipv4_tcp_services_and_weights() -> None:
    services, weights = parse_proc_ip_vs(PROC)
    assert services == {"10.10.0.100:80", "10.10.0.100:8080"}
    assert weights == {
        ("10.10.0.100:80", "10.20.0.13:80"): 1,
        ("10.10.0.100:80", "10.20.0.11:80"): 0,
        ("10.10.0.100:80", "127.0.0.1:80"): 1,
    }


def test_ipvsadm_save_rules() -> None:
    lines = [
        "-A -t 10.10.0.100:80 -s wlc",
        "-a -t 10.10.0.100:80 -r 10.20.0.11:80 -m -w 3",
        "-a -t 10.10.0.100:80 -r 127.0.0.1:80 -g -w 1",
        "-A -t 10.10.0.200:80 -s rr",
    ]
    assert save_services(lines) == {"10.10.0.100:80", "10.10.0.200:80"}
    assert save_weights(lines) == {
        ("10.10.0.100:80", "10.20.0.11:80"): 3,
        ("10.10.0.100:80", "127.0.0.1:80"): 1,
    }


def test_classify_answers() -> None:
    assert classify("still alive\nrs2\n", "200") == "rs2"
    assert classify("sorry server\n", "200") == "sorry"
    assert classify("200 OK but not the page\nrs3\n", "200") == "wrong"
    assert classify("", "000") == "failed 000"
