"""The vocabulary of the log. Imports nothing of ours."""
from events.base import Event, NewEvent, RecordedEvent, deterministic_id, REGISTRY  # noqa: F401
from events.catalogue import *  # noqa: F401,F403
from events.codec import decode, encode, from_wire, to_wire  # noqa: F401
