"""The settings as slices (engine/config.py, entrypoints/settings.py): each feature's fields
defined once, in its own class; the composition holds them all under their old
environment names, with every slice's validators."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from consumers.fleet.settings import FleetProcessSettings, FleetSettings
from consumers.metrics.settings import ObservabilitySettings
from consumers.notifications.settings import NotifySettings
from consumers.webhooks.settings import WebhookSettings
from engine.config import CoreSettings, slice_of
from engine.relay_settings import KafkaSettings
from entrypoints.api.settings import ApiSettings
from entrypoints.settings import EngineSettings

SLICES = (CoreSettings, ApiSettings, KafkaSettings, FleetSettings, WebhookSettings, NotifySettings,
          ObservabilitySettings)
# one field of each slice, its environment name, a value, and what the field then holds
ONE_OF_EACH = [
    (CoreSettings, "VEC_CHUNK_SIZE", "77", "chunk_size", 77),
    (ApiSettings, "VEC_API_PORT", "8123", "api_port", 8123),
    (ApiSettings, "VEC_ADMIN_TOKEN", "t" * 30, "admin_token", "t" * 30),
    (KafkaSettings, "VEC_KAFKA_BOOTSTRAP", "127.0.0.1:9", "kafka_bootstrap", "127.0.0.1:9"),
    (FleetSettings, "VEC_CLAIM_TTL", "4.5", "claim_ttl", 4.5),
    (WebhookSettings, "VEC_WEBHOOK_TIMEOUT", "7", "webhook_timeout", 7.0),
    (NotifySettings, "VEC_NOTIFY_SMTP_HOST", "relay.example.org", "notify_smtp_host", "relay.example.org"),
    (ObservabilitySettings, "VEC_METRICS_PORT", "9109", "metrics_port", 9109),
    (ObservabilitySettings, "VEC_LOG_FORMAT", "json", "log_format", "json"),
    (ObservabilitySettings, "VEC_TRACING", "off", "tracing", "off"),
]


@pytest.fixture(autouse=True)
def _no_vec_environment(monkeypatch, tmp_path):
    for name in [n for n in __import__("os").environ if n.startswith("VEC_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env but the test's own


def own_fields(cls: type) -> set[str]:
    """The fields a class defines itself (not those it inherits)."""
    return set(cls.__dict__.get("__annotations__", {})) - {"model_config"}


def test_each_field_is_defined_in_exactly_one_slice_and_the_composition_holds_them_all():
    defined = [field for cls in SLICES for field in own_fields(cls)]
    assert len(defined) == len(set(defined))
    assert set(EngineSettings.model_fields) == set(defined)
    assert own_fields(EngineSettings) == set() and own_fields(FleetProcessSettings) == set()


@pytest.mark.parametrize("cls, env, value, field, expected", ONE_OF_EACH, ids=[e for _, e, *_ in ONE_OF_EACH])
def test_environment_names_are_unchanged_for_the_slice_and_the_composition(monkeypatch, cls, env, value, field,
                                                                           expected):
    assert getattr(cls(), field) != expected
    monkeypatch.setenv(env, value)
    assert getattr(cls(), field) == expected
    assert getattr(EngineSettings(), field) == expected


def test_a_dotenv_file_is_read_by_every_slice(tmp_path):
    (tmp_path / ".env").write_text("VEC_WEBHOOK_MAX_ATTEMPTS=4\nVEC_NOTIFY_SMTP_PORT=2525\nVEC_WORKERS=3\n")
    assert WebhookSettings().webhook_max_attempts == 4
    assert NotifySettings().notify_smtp_port == 2525
    composed = EngineSettings()
    assert (composed.webhook_max_attempts, composed.notify_smtp_port, composed.workers) == (4, 2525, 3)


@pytest.mark.parametrize("cls, values", [
    (WebhookSettings, {"webhook_retry_schedule": "5,soon"}),
    (NotifySettings, {"notify_retry_schedule": ""}),
    (NotifySettings, {"notify_sender": "not an address"}),
    (CoreSettings, {"task_stall_timeout": 60, "provider_deadline": 120}),
    (KafkaSettings, {"kafka_topic_prefix": "no spaces"}),
    (ApiSettings, {"api_port": 0}),
    (ObservabilitySettings, {"log_format": "xml"}),
])
def test_each_slices_validators_hold_alone_and_in_the_composition(cls, values):
    with pytest.raises(ValidationError):
        cls(**values)
    with pytest.raises(ValidationError):
        EngineSettings(**values)


def test_a_feature_takes_its_slice_of_the_process_settings_or_reads_it_alone(monkeypatch):
    composed = EngineSettings(webhook_timeout=3)
    assert slice_of(composed, WebhookSettings) is composed
    monkeypatch.setenv("VEC_WEBHOOK_TIMEOUT", "9")
    alone = slice_of(CoreSettings(), WebhookSettings)  # a core-only engine: the slice from the environment
    assert isinstance(alone, WebhookSettings) and alone.webhook_timeout == 9
