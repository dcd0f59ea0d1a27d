#!/usr/bin/env python3
"""py3-validate-email (the most used Python verifier) as a whole process, for
bench/bench_probe.py: addresses on stdin, one a line; prints one JSON object of counts.

    peer_validate_email.py --threads 5 --dns 127.0.0.1:5300 --mail-from probe@vec.test < list

Only loopback: its MX look-up (dnspython's default resolver) is pointed at the mail
world's dnsmasq, and the `*.test` host names its SMTP client connects to are answered
from there too (a wrapper around socket.getaddrinfo; the package's files are untouched).
`PY3VE_IGNORE_UPDATER=1`: no block-list download thread.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import socket
import sys
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("PY3VE_IGNORE_UPDATER", "1")

import dns.resolver  # noqa: E402


def point_at(dns_host: str, dns_port: int) -> None:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers, resolver.port = [dns_host], dns_port
    dns.resolver.default_resolver = resolver
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kw):
        if isinstance(host, str) and host.rstrip(".").endswith(".test"):
            host = resolver.resolve(host, "A")[0].address
        return real(host, *args, **kw)
    socket.getaddrinfo = getaddrinfo


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=0, help="0: sequential")
    ap.add_argument("--dns", default="127.0.0.1:5300")
    ap.add_argument("--mail-from", default="probe@vec.test")
    args = ap.parse_args()
    host, _, port = args.dns.partition(":")
    point_at(host, int(port or 53))
    from validate_email import validate_email

    addrs = [line.strip() for line in sys.stdin if line.strip()]

    def check(addr: str) -> str:
        verdict = validate_email(addr, check_blacklist=False, check_smtp=True, smtp_timeout=10,
                                 smtp_helo_host="vec.test", smtp_from_address=args.mail_from,
                                 smtp_skip_tls=True, dns_timeout=5)
        return {True: "valid", False: "invalid", None: "ambiguous"}[verdict]
    if args.threads:
        with ThreadPoolExecutor(args.threads) as pool:
            verdicts = list(pool.map(check, addrs))
    else:
        verdicts = [check(a) for a in addrs]
    print(json.dumps(dict(collections.Counter(verdicts))))


if __name__ == "__main__":
    main()
