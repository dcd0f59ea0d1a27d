"""The `vec` console script. `vec probe` and `vec egress` need the verifier only: they
start without importing the engine, its stores and the API (about half the start-up of
a short probe run); every other command goes to entrypoints.cli as before."""
from __future__ import annotations

import sys

VERIFIER_COMMANDS = ("probe", "egress")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in VERIFIER_COMMANDS:
        import click

        from verifier.cli import egress, probe  # the verifier knows nothing of the engine

        group = click.Group("vec", commands={"probe": probe, "egress": egress})
        group(prog_name="vec")
        return
    from entrypoints.cli import main as full

    full()
