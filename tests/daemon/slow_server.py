"""Real servers for tests/daemon/test_lag_overload.py, in a process of their own (`main`): one
thread (`serve`) answers HTTP on every listening socket (`listen`: addresses x ports on loopback)
in arrival order, one answer every `every_s` at most: the throughput of a busy nginx on a
saturated host, behind which a burst of checks queues."""

from __future__ import annotations

import contextlib
import selectors
import socket
import sys
import threading
import time

CREDIT_S = 0.02
ANSWER = b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nalive\n"


def listen(
    addresses: list[str], ports: int, backlog: int = 4096
) -> tuple[selectors.BaseSelector, list[int]]:
    selector = selectors.DefaultSelector()
    found: list[int] = []
    for _ in range(ports):
        port = 0
        for address in addresses:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
            port = sock.getsockname()[1]
            sock.listen(backlog)
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, None)
        found.append(port)
    return selector, found


class Pace:
    """One answer every `every_s` at most."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.next_at = time.monotonic()

    def wait(self) -> None:
        now = time.monotonic()
        if now < self.next_at:
            time.sleep(self.next_at - now)
        # answers owed for up to CREDIT_S go out at once: a sleep's overshoot, or this thread
        # waiting for the interpreter's lock, does not lower the rate
        self.next_at = max(now - CREDIT_S, self.next_at) + self.every_s


def answer(selector: selectors.BaseSelector, key: selectors.SelectorKey, pace: Pace) -> None:
    conn = key.fileobj
    assert isinstance(conn, socket.socket)
    try:
        data = key.data + conn.recv(4096)
    except OSError:
        data = b""
    if data and b"\r\n\r\n" not in data:
        selector.modify(conn, selectors.EVENT_READ, data)
        return
    selector.unregister(conn)
    if data:
        pace.wait()
        with contextlib.suppress(OSError):
            conn.send(ANSWER)
    conn.close()


def serve(selector: selectors.BaseSelector, every_s: float, stop: threading.Event) -> None:
    pace = Pace(every_s)
    while not stop.is_set():
        for key, _ in selector.select(0.1):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if key.data is not None:
                answer(selector, key, pace)
                continue
            with contextlib.suppress(BlockingIOError):
                conn, _ = sock.accept()
                conn.setblocking(False)
                selector.register(conn, selectors.EVENT_READ, b"")


def close(selector: selectors.BaseSelector) -> None:
    for key in list(selector.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    selector.close()


def main() -> None:
    """python -m tests.daemon.slow_server ADDRESSES PORTS EVERY_S: serves 127.0.9.1 up to
    127.0.9.ADDRESSES on PORTS ports each, prints the ports on one line, stops when stdin closes."""
    addresses = [f"127.0.9.{a}" for a in range(1, int(sys.argv[1]) + 1)]
    selector, ports = listen(addresses, int(sys.argv[2]))
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(selector, float(sys.argv[3]), stop))
    thread.start()
    print(*ports, flush=True)
    sys.stdin.read()
    stop.set()
    thread.join()
    close(selector)


if __name__ == "__main__":
    main()
