"""The e-mail notifications' settings (environment, prefix VEC_), apart from
consumers/notifications/mail.py so that reading every setting loads no feature's code."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings

from engine.config import VEC_SETTINGS, Schedule


class NotifySettings(BaseSettings):
    """The e-mail notifications' (environment, prefix VEC_): the relay, the sender, retries."""

    model_config = VEC_SETTINGS

    notify_smtp_host: str = Field("", description="the SMTP relay notifications go through; empty: none is "
                                  "sent (they wait in the outbox)")
    notify_smtp_port: int = Field(587, ge=1, le=65535, description="the relay's port (587 submission, 465 "
                                  "implicit TLS, 25)")
    notify_smtp_tls: Literal["starttls", "tls", "none"] = Field(
        "starttls", description="starttls: required, refused without it; tls: implicit TLS from the first byte; "
        "none: plain text (a relay on this host only)")
    notify_smtp_ca_file: str = Field("", description="PEM file of the CAs the relay's certificate is checked "
                                     "against; empty: the system's")
    notify_smtp_username: str = Field("", description="SMTP AUTH user; empty: no AUTH")
    notify_smtp_password: SecretStr = Field(SecretStr(""), description="SMTP AUTH password")
    notify_sender: str = Field("vec <notifications@localhost>", description="the From of every notification "
                               "(its address is also the envelope sender and the Message-ID's domain)")
    notify_timeout: float = Field(30.0, gt=0, le=600, description="seconds each step of one SMTP session may "
                                  "take")
    notify_retry_schedule: Schedule = Field("5,30,120,600,1800,3600,7200,18000,36000",
                                       description="seconds before each retry while the relay is down or "
                                       "answers 4xx, comma-separated; the last repeats")
    notify_max_attempts: int = Field(10, ge=1, le=100, description="attempts before a message fails for good "
                                     "(a 5xx answer fails it at once)")
    notify_poll_interval: float = Field(0.5, gt=0, description="seconds between looks for new events and due "
                                        "messages")

    @field_validator("notify_sender")
    @classmethod
    def _notify_sender(cls, value: str) -> str:
        from email.utils import parseaddr

        if "@" not in parseaddr(value)[1]:
            raise ValueError(f"VEC_NOTIFY_SENDER is an address, optionally with a name: {value!r}")
        return value
