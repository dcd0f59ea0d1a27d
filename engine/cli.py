"""The `vec` command line."""
from __future__ import annotations

import click


@click.group()
def cli() -> None:
    """VEC: the event-sourced email-verification engine."""


def _register_verifier() -> None:
    from verifier.cli import probe  # the verifier knows nothing of the engine

    cli.add_command(probe)


def main() -> None:
    _register_verifier()
    cli()
