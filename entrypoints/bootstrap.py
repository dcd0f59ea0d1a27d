"""The composition root: the one place that builds the system from settings. Every
entrypoint (the CLI, `vec serve`, the API's upload lane, the fleet's roles) asks here for
its engine, runtime or fleet; nothing else opens a store or picks a provider.

    settings --open_engine--> Engine (store: SQLite or PostgreSQL by URL, keyring, read models)
             --runtime------> Runtime (embedded runner: the policies, the provider, FEATURES)
             --fleet--------> Fleet (the distributed runner: roles, per-host slots, FEATURES)
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from consumers.features import FEATURES
from consumers.fleet.settings import FleetProcessSettings
from engine import sealing_pool
from engine.config import slice_of
from entrypoints.settings import EngineSettings
from engine.service import Engine
from engine.store import open_database

if TYPE_CHECKING:
    from consumers.fleet.roles import Fleet, FleetAdapters
    from consumers.runtime import Runtime


def open_engine(settings: EngineSettings, actor: str = "engine") -> Engine:
    """The store at settings.store and an engine over it; `actor` is who its commands are
    attributed to unless a command says otherwise (cli:USER, api, engine)."""
    engine = Engine(open_database(settings.store), settings)
    engine.default_actor = actor
    if not settings.sealing_worker:  # the process's pool: one for every engine it opens
        sealing_pool.POOL.close()
    return engine


def runtime(engine: Engine, only_task: str | None = None) -> Runtime:
    """The embedded runner over `engine`, with the configured provider and every feature
    (a follower of one task, `only_task`, runs none of the features)."""
    from consumers.providers import build_provider
    from consumers.runtime import Runtime

    return Runtime(engine, build_provider(engine.settings), only_task=only_task, features=FEATURES)


def fleet(engine: Engine, roles: Iterable[str]) -> Fleet:
    """The distributed runner's roles in this process, each worker's provider built with the
    fleet-wide per-MX slots."""
    from consumers.fleet.roles import Fleet
    from consumers.providers import build_provider

    settings = slice_of(engine.settings, FleetProcessSettings)
    return Fleet(engine, settings, set(roles), lambda slots: build_provider(settings, slots), features=FEATURES,
                 adapters=fleet_adapters(settings))


def fleet_adapters(settings: FleetProcessSettings) -> FleetAdapters:
    """The fleet's PostgreSQL and Kafka adapters: leader locks, the relay, the MX slots."""
    from consumers.fleet.roles import FleetAdapters
    from consumers.fleet.slots import FleetHostSlots
    from engine.relay import Relay
    from engine.store.postgres import LeaderLock
    from verifier.config import VerifierSettings

    return FleetAdapters(leader_lock=lambda key: LeaderLock(settings.store, key),
                         relay=lambda name: Relay(settings.store, settings, name=name),
                         host_slots=lambda: FleetHostSlots(settings.store, VerifierSettings().per_mx_concurrency))
