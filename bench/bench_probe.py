#!/usr/bin/env python3
"""Benchmark: probes per second against the loopback main Postfix (127.0.0.2).

Side by side, on the same list of N distinct same-domain addresses:
  (a) naive: one aiosmtplib connection per address (connect, EHLO, MAIL, RCPT, QUIT),
      run sequentially and with the same number of parallel workers the verifier gets;
  (b) the verifier (verifier.build_provider): sessions reused for many RCPTs.
Prints probes/s, the ratio b/a and CPU seconds per 1,000 probes (getrusage of this
process, user+sys, over each run).

Lists (--list):
  accepted  local parts b0..bN at catchall.test: every RCPT gets 250 (default)
  mixed     example.test: the 8 real users once, then distinct unknown users
            (550 5.1.1); the verifier ends each session after 7 rejections to stay
            clear of Postfix's error limits, so this is its worst case

Usage (from the repo root, after scripts/install test):
  .venv/bin/python bench/bench_probe.py                 # starts and stops a mail world
  .venv/bin/python bench/bench_probe.py --state-dir DIR # reuse a world started by hand
  .venv/bin/python bench/bench_probe.py -n 5000 --concurrency 8 --rcpts-per-session 50
Only loopback addresses are used.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import aiosmtplib  # noqa: E402

from verifier import VerifierSettings, build_provider  # noqa: E402

MAIN = "127.0.0.2"
USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "info", "postmaster"]


def cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def addresses(kind: str, n: int, tag: str) -> list[str]:
    if kind == "accepted":
        return [f"b{i}-{tag}@catchall.test" for i in range(n)]
    known = [f"{u}@example.test" for u in USERS][:n]
    return known + [f"nobody{i}-{tag}@example.test" for i in range(n - len(known))]


async def naive(addrs: list[str], workers: int, mail_from: str, timeout: float) -> collections.Counter:
    """One connection per address; `workers` such loops in parallel."""
    queue = collections.deque(addrs)
    codes: collections.Counter = collections.Counter()

    async def loop() -> None:
        while queue:
            rcpt = queue.popleft()
            smtp = aiosmtplib.SMTP(hostname=MAIN, port=25, local_hostname="vec.test",
                                   timeout=timeout, start_tls=False)
            try:
                await smtp.connect()
                await smtp.ehlo()
                await smtp.mail(mail_from)
                try:
                    resp = await smtp.rcpt(rcpt)
                    codes[resp.code] += 1
                except aiosmtplib.SMTPRecipientRefused as exc:
                    codes[exc.code] += 1
                await smtp.quit()
            except aiosmtplib.SMTPException as exc:
                codes[f"error {type(exc).__name__}"] += 1
                smtp.close()

    await asyncio.gather(*(loop() for _ in range(workers)))
    return codes


async def with_verifier(addrs: list[str], settings: VerifierSettings) -> collections.Counter:
    provider = build_provider(settings)
    results = await provider.verify(addrs)
    return collections.Counter(f"{r.status}/{r.reason}" for r in results)


def measure(label: str, coro_factory, n: int) -> dict:
    c0, t0 = cpu(), time.perf_counter()
    outcome = asyncio.run(coro_factory())
    wall, used = time.perf_counter() - t0, cpu() - c0
    row = {"mode": label, "n": n, "seconds": wall, "rate": n / wall, "cpu_per_1000": used / n * 1000,
           "outcome": dict(outcome)}
    print(f"{label:<44} {n:>6} {wall:>8.2f} {row['rate']:>10.0f} {row['cpu_per_1000']:>10.3f}  {dict(outcome)}",
          flush=True)
    return row


class World:
    """Starts the mail world (scripts/mailworld) unless one is given."""

    def __init__(self, state_dir: str | None) -> None:
        self.given = state_dir
        self.tmp: tempfile.TemporaryDirectory | None = None
        self.state_dir = state_dir

    def __enter__(self) -> "World":
        script = str(REPO / "scripts" / "mailworld")
        if self.given:
            subprocess.run([script, "status", self.given], check=True, capture_output=True)
            return self
        subprocess.run([script, "install"], check=True)
        self.tmp = tempfile.TemporaryDirectory(prefix="vec-bench-")
        self.state_dir = os.path.join(self.tmp.name, "world")
        subprocess.run([script, "start", self.state_dir, "--owner", str(os.getpid()), "--wait", "120"],
                       check=True)
        return self

    def __exit__(self, *exc) -> None:
        if not self.given and self.state_dir:
            subprocess.run([str(REPO / "scripts" / "mailworld"), "stop", self.state_dir], check=False)
        if self.tmp is not None:
            self.tmp.cleanup()


# --- whole processes, side by side with the peer (--vs-peer) -------------------------------
PEER = REPO / "bench" / "peer_validate_email.py"


def sessions_in(log: Path, start: int) -> tuple[int, int]:
    """(SMTP sessions, 421 replies) Postfix logged since byte `start`."""
    time.sleep(0.3)  # the log writer (postlogd) is asynchronous: let it catch up
    with open(log, "rb") as fh:
        fh.seek(start)
        text = fh.read().decode("utf-8", "replace")
    return text.count(": connect from "), text.count(" 421 ")


def run_process(label: str, argv: list[str], addrs: list[str], env: dict, log: Path) -> dict:
    start = log.stat().st_size
    t0 = time.perf_counter()
    proc = subprocess.run(argv, input="\n".join(addrs) + "\n", env=env, capture_output=True,
                          text=True, timeout=900)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    sessions, r421 = sessions_in(log, start)
    lines = proc.stdout.splitlines()
    if argv[0].endswith("vec"):
        outcome = dict(collections.Counter(json.loads(x)["status"] for x in lines))
    else:
        outcome = json.loads(lines[-1])
    row = {"mode": label, "n": len(addrs), "seconds": wall, "rate": len(addrs) / wall,
           "sessions": sessions, "r421": r421, "outcome": outcome}
    print(f"{label:<34} {len(addrs):>6} {wall:>8.2f} {row['rate']:>9.0f} {sessions:>9} {r421:>4}  {outcome}",
          flush=True)
    return row


def compile_bytecode() -> None:
    """Our packages' bytecode, as `pip install` writes it for an installed wheel (and for the
    peer in site-packages): in an editable checkout run with PYTHONDONTWRITEBYTECODE set,
    `vec probe` would otherwise compile its own modules from source at every start (~20 ms)."""
    import compileall

    for package in ("verifier", "entrypoints"):
        compileall.compile_dir(str(REPO / package), quiet=1)


def vs_peer(args, state_dir: str, tag: str) -> None:
    """`vec probe` and py3-validate-email, each as a whole process, on the same list."""
    compile_bytecode()
    log = Path(state_dir) / "postfix.log"
    vec = str(Path(sys.executable).with_name("vec"))
    mail_from = f"bench-{tag}@vec.test"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VEC_")}
    env.update(VEC_DNS_SERVERS="127.0.0.1:5300", VEC_SMTP_PORT="25", VEC_HELO_NAME="vec.test",
               VEC_MAIL_FROM=mail_from, VEC_ALLOW_TEST_DOMAINS="true", VEC_LOOPBACK_ONLY="true",
               VEC_SMTP_TIMEOUT="10", VEC_ADDRESS_DEADLINE="120", PY3VE_IGNORE_UPDATER="1")
    print(f"list={args.list} n={args.n} host={MAIN}; whole processes (start-up included)")
    print(f"{'mode':<34} {'probes':>6} {'seconds':>8} {'probes/s':>9} {'sessions':>9} {'421':>4}  outcome")
    ratios: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
    for run in range(args.repeat):  # the contenders alternate: a load peak hits both
        rows = {}
        for threads in (0, 5, 20):
            label = f"py3-validate-email, {'sequential' if not threads else f'{threads} threads'}"
            rows[label] = run_process(label, [sys.executable, str(PEER), "--threads", str(threads),
                                              "--mail-from", mail_from],
                                      addresses(args.list, args.n, f"p{threads}{run}{tag}"), env, log)
        ours = run_process("vec probe (defaults)", [vec, "probe", "--json", "-"],
                           addresses(args.list, args.n, f"v{run}{tag}"), env, log)
        for label, peer in rows.items():
            ratios[label].append((ours["rate"] / peer["rate"], 100 * ours["sessions"] / max(1, peer["sessions"])))
    print(f"load average after the runs: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for label, got in ratios.items():
        speed = sorted(r for r, _ in got)
        print(f"vec probe / {label}: {speed[0]:.2f}-{speed[-1]:.2f}x probes/s "
              f"(median {speed[len(speed) // 2]:.2f}x), {max(s for _, s in got):.1f} % of its sessions at most")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=2000, help="addresses per run (default 2000)")
    ap.add_argument("--list", choices=("accepted", "mixed"), default="accepted")
    ap.add_argument("--concurrency", type=int, default=5,
                    help="naive parallel loops = verifier per-MX sessions (default 5)")
    ap.add_argument("--rcpts-per-session", type=int, default=20)
    ap.add_argument("--no-sequential", action="store_true", help="skip the sequential naive loop")
    ap.add_argument("--state-dir", help="reuse a running mail world instead of starting one")
    ap.add_argument("--repeat", type=int, default=3, help="--vs-peer rounds (default 3)")
    ap.add_argument("--vs-peer", action="store_true",
                    help="whole processes: `vec probe` vs py3-validate-email (pip install -e '.[bench]')")
    args = ap.parse_args()

    with World(args.state_dir) as world:
        tag = uuid.uuid4().hex[:8]
        if args.vs_peer:
            vs_peer(args, world.state_dir, tag)
            return
        mail_from = f"bench-{tag}@vec.test"
        settings = VerifierSettings(
            dns_servers="127.0.0.1:5300", smtp_port=25, helo_name="vec.test", mail_from=mail_from,
            allow_test_domains=True, loopback_only=True, per_mx_concurrency=args.concurrency,
            rcpts_per_session=args.rcpts_per_session, smtp_timeout=10, address_deadline=60,
        )
        # warm-up (DNS, Postfix processes) on addresses not measured
        asyncio.run(naive(addresses(args.list, 20, "warm" + tag), args.concurrency, mail_from, 10))
        asyncio.run(with_verifier(addresses(args.list, 20, "warm2" + tag), settings))

        print(f"list={args.list} n={args.n} concurrency={args.concurrency} "
              f"rcpts/session={args.rcpts_per_session} host={MAIN}")
        print(f"{'mode':<44} {'probes':>6} {'seconds':>8} {'probes/s':>10} {'cpu_s/1k':>10}  outcome")
        rows = []
        if not args.no_sequential:
            a = addresses(args.list, args.n, "s" + tag)
            rows.append(measure("(a) naive, 1 connection/address, sequential",
                                lambda: naive(a, 1, mail_from, 10), args.n))
        a2 = addresses(args.list, args.n, "p" + tag)
        rows.append(measure(f"(a) naive, 1 connection/address, x{args.concurrency}",
                            lambda: naive(a2, args.concurrency, mail_from, 10), args.n))
        b = addresses(args.list, args.n, "v" + tag)
        rows.append(measure(f"(b) verifier, {args.concurrency} sessions x {args.rcpts_per_session} RCPT",
                            lambda: with_verifier(b, settings), args.n))
        naive_par, ver = rows[-2], rows[-1]
        print(f"ratio b/a (same parallelism): {ver['rate'] / naive_par['rate']:.2f}x")
        if not args.no_sequential:
            print(f"ratio b/a (naive sequential): {ver['rate'] / rows[0]['rate']:.2f}x")
        print(f"CPU s per 1,000 probes: naive x{args.concurrency} {naive_par['cpu_per_1000']:.3f}, "
              f"verifier {ver['cpu_per_1000']:.3f}")


if __name__ == "__main__":
    main()
