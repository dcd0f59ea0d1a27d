"""The settings a process is built with: every feature's slice at once, composed here, at
the composition root (entrypoints/bootstrap.py). Each slice defines its own fields,
validators and descriptions beside its feature, in a module of its own that loads none of
the feature's code (so `vec` starts as fast as before); a module reads only its slice
(`slice_of`). Environment names are the fields' own with the prefix VEC_ (.env is read too)."""
from __future__ import annotations

from consumers.fleet.settings import FleetProcessSettings
from consumers.metrics.settings import ObservabilitySettings
from consumers.notifications.settings import NotifySettings
from consumers.webhooks.settings import WebhookSettings
from engine.config import VEC_SETTINGS
from entrypoints.api.settings import ApiSettings


class EngineSettings(FleetProcessSettings, ApiSettings, WebhookSettings, NotifySettings, ObservabilitySettings):
    """Every slice's settings (no field of its own): the engine core's (engine/config.py),
    Kafka's (engine/relay_settings.py) and the fleet's (consumers/fleet/settings.py), the
    API's (entrypoints/api/settings.py), the webhooks', the notifications' and
    observability's (consumers/webhooks/settings.py, consumers/notifications/settings.py,
    consumers/metrics/settings.py)."""

    model_config = VEC_SETTINGS
