#!/usr/bin/env python3
"""Tiny socket servers of the loopback mail world (stdlib only, one process, one thread).

- tarpit   127.0.0.5:25   accepts TCP connections and never writes (greeting timeout)
- blackhole 127.0.0.6:25  listens with backlog 0; its accept queue is kept full by one
                          self-connection that is never accepted, so further connects time out
- dead DNS 127.0.0.1:5301 UDP and TCP: reads queries and never answers (DNS timeout)

Started in the background by `scripts/mailworld start`; stopped with SIGTERM by PID.
Writes READY_FILE (argument --ready-file) once every socket is set up.
"""
from __future__ import annotations

import argparse
import os
import selectors
import signal
import socket
import sys
import time

MAX_HELD = 2000  # tarpit/dead-DNS TCP connections held open at most (oldest closed first)


def tcp_listener(host: str, port: int, backlog: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(backlog)
    return s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ready-file", required=True)
    ap.add_argument("--tarpit", default="127.0.0.5:25")
    ap.add_argument("--blackhole", default="127.0.0.6:25")
    ap.add_argument("--dead-dns", default="127.0.0.1:5301")
    args = ap.parse_args()

    def split(hp: str) -> tuple[str, int]:
        h, p = hp.rsplit(":", 1)
        return h, int(p)

    class Stop(Exception):
        pass

    def on_term(signum, frame):  # noqa: ARG001
        raise Stop()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    sel = selectors.DefaultSelector()

    tarpit = tcp_listener(*split(args.tarpit), backlog=128)
    tarpit.setblocking(False)
    sel.register(tarpit, selectors.EVENT_READ, "accept")

    # Blackhole: backlog 0 lets exactly one connection wait in the accept queue (Linux
    # drops SYNs when the queue holds more than `backlog`); we fill it ourselves and
    # never call accept(), so every later SYN is dropped and connect() times out.
    blackhole = tcp_listener(*split(args.blackhole), backlog=0)
    filler = socket.create_connection(split(args.blackhole), timeout=5)
    filler.setblocking(False)

    dns_host, dns_port = split(args.dead_dns)
    dns_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dns_udp.bind((dns_host, dns_port))
    dns_udp.setblocking(False)
    sel.register(dns_udp, selectors.EVENT_READ, "udp")
    dns_tcp = tcp_listener(dns_host, dns_port, backlog=128)
    dns_tcp.setblocking(False)
    sel.register(dns_tcp, selectors.EVENT_READ, "accept")

    held: dict[socket.socket, float] = {}

    tmp = args.ready_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(tmp, args.ready_file)
    print(f"mailworld_sockets ready (pid {os.getpid()}): tarpit {args.tarpit}, "
          f"blackhole {args.blackhole}, dead DNS {args.dead_dns}", flush=True)

    try:
        serve(sel, held)
    except Stop:
        pass
    for s in list(held):
        s.close()
    for s in (tarpit, blackhole, filler, dns_udp, dns_tcp):
        s.close()
    return 0


def serve(sel: selectors.BaseSelector, held: dict) -> None:
    while True:
        events = sel.select(timeout=10.0)
        for key, _ in events:
            sock = key.fileobj
            what = key.data
            if what == "accept":
                try:
                    conn, _ = sock.accept()
                except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                    continue
                except OSError as e:  # e.g. EMFILE: drop the oldest held connection
                    print(f"accept failed: {e}", file=sys.stderr, flush=True)
                    if held:
                        oldest = min(held, key=held.get)
                        sel.unregister(oldest)
                        oldest.close()
                        del held[oldest]
                    continue
                conn.setblocking(False)
                if len(held) >= MAX_HELD:
                    oldest = min(held, key=held.get)
                    sel.unregister(oldest)
                    oldest.close()
                    del held[oldest]
                held[conn] = time.monotonic()
                sel.register(conn, selectors.EVENT_READ, "conn")
            elif what == "udp":
                try:
                    while True:
                        sock.recvfrom(65535)  # read and never answer
                except (BlockingIOError, InterruptedError):
                    pass
            else:  # a held connection: discard input, close when the peer closes
                try:
                    data = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(sock)
                    sock.close()
                    held.pop(sock, None)


if __name__ == "__main__":
    sys.exit(main())
