#!/usr/bin/env python3
"""A slow SMTP server that counts, for tests and benchmarks of politeness and cancel latency.

    counting_smtp.py --listen 127.0.0.10:25 [--listen ...] --rcpt-delay 0.5 --stats FILE

It answers every session like a mail server that knows every recipient (250 to RCPT after
`--rcpt-delay` seconds; never accepts DATA) and records, per listening address: the
sessions open now and at most, and every RCPT with the time it arrived (wall clock, to
compare with the times the engine's clients see). The stats are written as JSON to FILE
every 0.2 s and at exit (SIGTERM/SIGINT). Loopback addresses only. Standard library only.
"""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import signal
import sys
import time


class Counter:
    def __init__(self) -> None:
        self.open = 0
        self.max_open = 0
        self.sessions = 0
        self.rcpts: list[tuple[float, str]] = []

    def to_json(self) -> dict:
        return {"open": self.open, "max_open": self.max_open, "sessions": self.sessions,
                "rcpts": [{"at": at, "to": to} for at, to in self.rcpts]}


async def serve_session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counter: Counter,
                        rcpt_delay: float, banner: str) -> None:
    counter.open += 1
    counter.sessions += 1
    counter.max_open = max(counter.max_open, counter.open)
    try:
        writer.write(f"220 {banner} ESMTP counting\r\n".encode())
        await writer.drain()
        while line := await reader.readline():
            command = line.decode("ascii", "replace").strip()
            verb = command.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                writer.write(f"250-{banner}\r\n250 PIPELINING\r\n".encode() if verb == "EHLO"
                             else f"250 {banner}\r\n".encode())
            elif verb == "MAIL":
                writer.write(b"250 2.1.0 Ok\r\n")
            elif verb == "RCPT":
                counter.rcpts.append((time.time(), command.partition(":")[2].strip().strip("<>")))
                await asyncio.sleep(rcpt_delay)
                writer.write(b"250 2.1.5 Ok\r\n")
            elif verb == "RSET":
                writer.write(b"250 2.0.0 Ok\r\n")
            elif verb == "QUIT":
                writer.write(b"221 2.0.0 Bye\r\n")
                await writer.drain()
                break
            else:
                writer.write(b"502 5.5.2 Error: command not recognized\r\n")
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        counter.open -= 1
        writer.close()


async def main(args: argparse.Namespace) -> None:
    counters: dict[str, Counter] = {}
    servers = []
    for spec in args.listen:
        host, _, port = spec.rpartition(":")
        if not ipaddress.ip_address(host).is_loopback:
            raise SystemExit(f"counting_smtp: {host} is not a loopback address")
        counter = counters[spec] = Counter()
        servers.append(await asyncio.start_server(
            lambda r, w, c=counter: serve_session(r, w, c, args.rcpt_delay, "mx.counted.test"),
            host, int(port), reuse_address=True))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def dump() -> None:
        tmp = f"{args.stats}.tmp"
        with open(tmp, "w") as f:
            json.dump({spec: c.to_json() for spec, c in counters.items()}, f)
        os.replace(tmp, args.stats)

    dump()
    print("ready", flush=True)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 0.2)
        except asyncio.TimeoutError:
            pass
        dump()
    for server in servers:
        server.close()
    dump()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", action="append", required=True, help="loopback HOST:PORT (repeatable)")
    parser.add_argument("--rcpt-delay", type=float, default=0.5)
    parser.add_argument("--stats", required=True)
    try:
        asyncio.run(main(parser.parse_args()))
    except OSError as error:
        print(f"counting_smtp: {error}", file=sys.stderr)
        sys.exit(1)
