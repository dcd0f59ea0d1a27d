"""Traces (OpenTelemetry): spans of the API, the engine, the relay and the workers, exported
by OTLP/HTTP when configured; off by default, and then free: nothing of OpenTelemetry is
imported, every helper here is a constant-time no-op.

On when `VEC_TRACING=otlp`, or `VEC_TRACING=auto` (the default) and an OTLP endpoint is set
(`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); `OTEL_SDK_DISABLED=true`
turns it off whatever else says. The exporter reads the standard `OTEL_EXPORTER_OTLP_*`
variables (endpoint, headers, timeout) and `OTEL_BSP_*` (batching); `OTEL_SERVICE_NAME`
names the process (default `vec-api`, `vec-run`, `vec-<roles>`).

One task, one trace, with no new field in any event: the trace id of a task's spans is the
task's id (32 hex digits: a W3C trace id), which is also the correlation id of its events.
The task's root span ("vec.task.create", in the process that created it) gets a span id
derived from the task id too (`task_context`), so any process that handles a task's event
can start a child of that root from the event's correlation id alone. The root links to the
span that was current when the task was created (the upload's HTTP request).

Across Kafka, the W3C `traceparent` header carries the context: the relay sets it on each
task event (`event_headers`: a "vec.relay.publish" span for the events that start work, the
task's root otherwise), the fleet's scheduler continues it into a new task's first work
items, the verifier into the outcomes it sends back, and the settler records them under it
and sends the task's next work items under the verification whose results made room.
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import re
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, ParamSpec, TypeVar

if TYPE_CHECKING:  # imported only when tracing is on: free when off
    from fastapi import FastAPI
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.id_generator import IdGenerator
    from opentelemetry.trace import Tracer

P = ParamSpec("P")
R = TypeVar("R")

TRACEPARENT = "traceparent"
TASK_ID = re.compile(r"[0-9a-f]{32}")
# events after which the fleet starts work: the relay gives each a span of its own
WORK_EVENTS = frozenset({"TaskCreated", "ChunkSubmitted", "TaskCompleted", "TaskFailed", "TaskCancelled"})

_tracer: Tracer | None = None  # while tracing is on
_provider: TracerProvider | None = None
_root_of: contextvars.ContextVar[str | None] = contextvars.ContextVar("vec_trace_root", default=None)


def enabled() -> bool:
    return _tracer is not None


def wanted(mode: str | None = None, env: Mapping[str, str] = os.environ) -> bool:
    """Whether this process should trace (see the module's doc)."""
    mode = (mode or env.get("VEC_TRACING") or "auto").lower()
    if mode not in ("auto", "off", "otlp"):
        raise ValueError(f"VEC_TRACING is auto, off or otlp, not {mode!r}")
    if mode == "off" or env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return mode == "otlp" or bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def configure(service: str, mode: str | None = None) -> bool:
    """Turns tracing on with the OTLP/HTTP exporter when wanted (once per process)."""
    if enabled() or not wanted(mode):
        return enabled()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    install(BatchSpanProcessor(OTLPSpanExporter()), service)
    return True


def install(processor: SpanProcessor, service: str) -> TracerProvider:
    """Tracing on, spans to `processor` (the tests pass a SimpleSpanProcessor of an
    InMemorySpanExporter); returns the TracerProvider. The process's global provider is not
    touched: everything here uses this one."""
    global _tracer, _provider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or service}),
                              id_generator=_task_ids())
    provider.add_span_processor(processor)
    _provider, _tracer = provider, provider.get_tracer("vec")
    return provider


def uninstall() -> None:
    """Tracing off again, after flushing what was recorded (tests)."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _provider = _tracer = None


def provider() -> TracerProvider | None:
    return _provider


def _task_ids() -> IdGenerator:
    """The SDK's random ids, except for a task's root span (see `task_root`)."""
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class TaskIds(RandomIdGenerator):
        def generate_trace_id(self) -> int:
            task_id = _root_of.get()
            return int(task_id, 16) if task_id else super().generate_trace_id()

        def generate_span_id(self) -> int:
            task_id = _root_of.get()
            return root_span_id(task_id) if task_id else super().generate_span_id()

    return TaskIds()


def is_task_id(value: str | None) -> bool:
    return bool(value) and TASK_ID.fullmatch(value or "") is not None and int(value or "0", 16) != 0


def root_span_id(task_id: str) -> int:
    """The span id of a task's root span: from its id, the same in every process."""
    return int.from_bytes(hashlib.sha256(f"vec-task-root/{task_id}".encode()).digest()[:8], "big") or 1


def task_context(task_id: str) -> Context:
    """A context whose parent is the task's root span (wherever it was recorded)."""
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    parent = SpanContext(int(task_id, 16), root_span_id(task_id), is_remote=True,
                         trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return trace.set_span_in_context(NonRecordingSpan(parent))


@contextlib.contextmanager
def task_root(task_id: str, name: str = "vec.task.create", **attributes: Any) -> Iterator[Any]:
    """The root span of a task's trace (trace id = task id), linked to the current span."""
    if _tracer is None or not is_task_id(task_id):
        yield None
        return
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.trace import Link

    current = trace.get_current_span().get_span_context()
    token = _root_of.set(task_id)
    try:
        span = _tracer.start_span(name, context=Context(), links=[Link(current)] if current.is_valid else (),
                                  attributes=_attributes({"vec.task_id": task_id, **attributes}))
    finally:
        _root_of.reset(token)
    if current.is_valid:
        trace.get_current_span().set_attribute("vec.task_id", task_id)
    with trace.use_span(span, end_on_exit=True):
        yield span


@contextlib.contextmanager
def span(name: str, task_id: str | None = None, carrier: Any = None, kind: str = "internal",
         **attributes: Any) -> Iterator[Any]:
    """A span named `name`. Its parent: the context in `carrier` (Kafka headers) when it has
    one, else the current span, else the root span of `task_id`'s trace."""
    if _tracer is None:
        yield None
        return
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind

    context = extract(carrier) if carrier is not None else None
    if context is None and not trace.get_current_span().get_span_context().is_valid and is_task_id(task_id):
        context = task_context(task_id or "")
    attrs = _attributes({"vec.task_id": task_id, **attributes})
    with _tracer.start_as_current_span(name, context=context, kind=getattr(SpanKind, kind.upper()),
                                       attributes=attrs) as current:
        yield current


def annotate(current: Any, **attributes: Any) -> None:
    """Adds attributes to a span of `span` (nothing when tracing is off)."""
    if current is not None:
        current.set_attributes(_attributes(attributes))


def _attributes(values: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        key = key if "." in key else f"vec.{key}"
        out[key] = list(value) if isinstance(value, (tuple, list, set, frozenset)) else value
    return out


# --- Kafka headers ------------------------------------------------------------------------

def headers() -> list[tuple[str, bytes]]:
    """The current span's context as Kafka headers ([] when off or outside a span)."""
    if _tracer is None:
        return []
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return [(key, value.encode()) for key, value in carrier.items()]


# what a relayed event may carry besides its CloudEvents headers (engine/relay.py), when tracing is on
EVENT_HEADERS = {
    "traceparent": "optional, only while tracing is on: the W3C trace context (trace id = the task id); "
                   "absent on account events",
    "tracestate": "optional: W3C trace state, when the tracer sets one",
}


def event_headers(type_name: str, correlation_id: str | None, position: int) -> list[tuple[str, bytes]]:
    """The relay's trace headers for one event ([] when off, or not a task's event): a
    "vec.relay.publish" span for an event that starts work, the task's root otherwise."""
    if _tracer is None or not is_task_id(correlation_id):
        return []
    if type_name not in WORK_EVENTS:
        return _context_headers(task_context(correlation_id or ""))
    with span("vec.relay.publish", correlation_id, kind="producer", event_type=type_name, position=position):
        return headers()


def _context_headers(context: Context) -> list[tuple[str, bytes]]:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, context=context)
    return [(key, value.encode()) for key, value in carrier.items()]


def extract(carrier: Any) -> Context | None:
    """The context in Kafka headers (a mapping or (key, value) pairs), or None."""
    if _tracer is None or not carrier:
        return None
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    pairs: Iterable[tuple[Any, Any]] = carrier.items() if isinstance(carrier, Mapping) else carrier
    text = {(k.decode() if isinstance(k, bytes) else str(k)).lower(): (v.decode() if isinstance(v, bytes) else str(v))
            for k, v in pairs if v is not None}
    if TRACEPARENT not in text:
        return None
    context = TraceContextTextMapPropagator().extract(text)
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def carry(fn: Callable[P, R]) -> Callable[P, R]:
    """`fn`, to run on another thread in this context (the current span goes with it);
    `fn` itself when tracing is off."""
    if _tracer is None:
        return fn
    context = contextvars.copy_context()  # now, on the caller's side
    def carried(*args: P.args, **kwargs: P.kwargs) -> R:
        return context.run(fn, *args, **kwargs)

    return carried


def instrument_app(app: FastAPI) -> None:
    """FastAPI's spans (one per request) on the API, when tracing is on."""
    if _tracer is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, tracer_provider=_provider, excluded_urls="healthz,metrics")
