"""The distributed mode's fleet: the engine's roles as processes on any hosts, sharing one
PostgreSQL log and one Kafka cluster (see shared/DESIGN.md, "Two modes, one core").

- relay      (engine/relay.py) the log -> `PREFIX.events`, keyed by stream; one leader.
- worker     faust agents in one consumer group: the scheduler (task events -> chunks
             submitted, chunk work dispatched to `PREFIX.chunks`), verification (chunk work
             -> the provider -> `PREFIX.results`, keyed by task), the settler (results ->
             the log, one writer per task, in batches). Any number of worker processes.
- projector  the log -> the read models in PostgreSQL; one leader.
- watchdog   the fleet's outage clock and reconciliation; one leader.

Kafka carries the work fast; the log in PostgreSQL is the truth. Nothing here rests on Kafka
keeping a message (the test broker keeps none across a restart): the watchdog reconciles
every active task from the log, and a chunk whose worker went silent is given to another.
"""
