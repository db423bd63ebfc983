"""IMAP reals in a process of their own (so that they flood at full speed, whatever the daemon's
event loop does): `python tests/hostile/imapflood.py HEALTHY FLOODING` prints one line of ports,
the healthy ones first, then serves until stdin closes.

Every real greets and answers LOGIN with a tagged OK. A line "flood" on stdin turns the flooding
ones hostile from then on: they answer LOGIN with an endless stream of short untagged lines
(3 bytes each) and never the tagged answer, as long as the client reads.
"""

from __future__ import annotations

import socket
import sys
import threading

FLOOD = b"* \n" * 65536  # 192 KiB of 3-byte untagged lines per send
GREETING = b"* OK IMAP4rev1 ready\r\n"

hostile = threading.Event()


def serve_one(conn: socket.socket, floods: bool) -> None:
    with conn:
        try:
            conn.sendall(GREETING)
            buf = b""
            while b"\n" not in buf:
                data = conn.recv(4096)
                if not data:
                    return
                buf += data
            if floods and hostile.is_set():
                while True:
                    conn.sendall(FLOOD)
            tag = buf.split(b" ", 1)[0]
            conn.sendall(tag + b" OK LOGIN completed\r\n")
            while conn.recv(4096):  # LOGOUT, then the client closes
                pass
        except OSError:
            return


def listen(floods: bool) -> int:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)

    def accept() -> None:
        while True:
            conn, _ = sock.accept()
            threading.Thread(target=serve_one, args=(conn, floods), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    port: int = sock.getsockname()[1]
    return port


def main() -> None:
    healthy, flooding = int(sys.argv[1]), int(sys.argv[2])
    ports = [listen(False) for _ in range(healthy)] + [listen(True) for _ in range(flooding)]
    print(" ".join(map(str, ports)), flush=True)
    for line in sys.stdin:
        if line.strip() == "flood":
            hostile.set()
            print("flooding", flush=True)


if __name__ == "__main__":
    main()
