"""compose.yaml is the real deployment: it validates against the compose specification's
schema (the copy check-jsonschema ships and keeps current), and every `vec` command it runs parses with the
CLI as it is (commands, options and choices)."""
from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import click
import jsonschema
import pytest
import yaml

from entrypoints.cli import cli

COMPOSE = Path(__file__).resolve().parents[2] / "compose.yaml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def spec() -> jsonschema.Draft7Validator:
    # the file only: importing check_jsonschema itself needs a newer click than faust allows
    path = metadata.distribution("check-jsonschema").locate_file("check_jsonschema/builtin_schemas/vendor/compose-spec.json")
    return jsonschema.Draft7Validator(json.loads(Path(path).read_text()))


def test_compose_yaml_follows_the_compose_specification(compose, spec):
    errors = sorted(spec.iter_errors(compose), key=lambda e: list(e.path))
    assert errors == [], "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_the_schema_check_catches_a_broken_file(compose, spec):
    broken = {**compose, "services": {**compose["services"], "worker": {**compose["services"]["worker"],
                                                                        "restart": ["always"], "replicaz": 2}}}
    assert list(spec.iter_errors(broken))


def test_the_stack_has_every_role_a_migration_and_health_checks(compose):
    services = compose["services"]
    commands = {name: s.get("command") for name, s in services.items()}
    assert commands["migrate"] == ["vec", "migrate"]
    for role in ("relay", "worker", "projector", "watchdog"):
        assert commands[role] == ["vec", "run", "--role", role]
        assert services[role]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert services[role]["healthcheck"]["test"][:3] == ["CMD", "vec", "fleet"]
    assert services["worker"]["deploy"]["replicas"] >= 2
    assert {"kafka", "postgres"} <= set(services)
    assert all("healthcheck" in services[s] for s in ("kafka", "postgres"))


def _parse(argv: list[str]) -> None:
    """Parses a command line with the CLI as it is, without running it."""
    command: click.Command = cli
    ctx = command.make_context("vec", list(argv), resilient_parsing=False)
    while isinstance(command, click.Group):
        protected = ctx._protected_args if hasattr(ctx, "_protected_args") else ctx.protected_args
        args = [*protected, *ctx.args]
        name, command, rest = command.resolve_command(ctx, args)
        ctx = command.make_context(name, rest, parent=ctx)


def _vec_commands(compose) -> list[list[str]]:
    found = []
    for service in compose["services"].values():
        for argv in (service.get("command"), service.get("healthcheck", {}).get("test")):
            if argv and argv[0] == "CMD":
                argv = argv[1:]
            if argv and argv[0] == "vec":
                found.append(argv[1:])
    return found


def test_every_vec_command_in_compose_exists_in_the_cli(compose):
    commands = _vec_commands(compose)
    assert len(commands) >= 6
    for argv in commands:
        _parse(argv)


def test_the_parser_check_catches_a_command_that_does_not_exist():
    with pytest.raises(click.UsageError):
        _parse(["run", "--role", "dispatcher"])
    with pytest.raises(click.UsageError):
        _parse(["launch"])
