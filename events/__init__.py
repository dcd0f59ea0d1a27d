"""The vocabulary of the log. Imports nothing of ours."""
from events.base import REGISTRY as REGISTRY
from events.base import Event as Event
from events.base import NewEvent as NewEvent
from events.base import RecordedEvent as RecordedEvent
from events.base import deterministic_id as deterministic_id
from events.catalogue import *  # noqa: F401,F403
from events.codec import Decoder as Decoder
from events.codec import decode as decode
from events.codec import encode as encode
from events.codec import from_wire as from_wire
from events.codec import to_wire as to_wire
