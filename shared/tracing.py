"""One trace per job: OpenTelemetry spans from the API's submit through the queue wait,
the cutout's stages and each effect to the webhook's delivery.

The W3C trace context travels in each task's message headers, so every task of a job
joins the trace its submit started; the API answers each request's `traceparent`.
Tracing is off (no-op spans, nothing sent) unless CUTFX_TRACING_ENDPOINT names an OTLP/HTTP
receiver. The process's tracer is its own, not OpenTelemetry's global one, so nothing
else in the process (a library's instrumentation) traces through it by surprise.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shared.settings import Settings

TRACEPARENT_HEADER = "traceparent"
INSTRUMENTATION_NAME = "cutfx"
_propagator = TraceContextTextMapPropagator()
_tracer: trace.Tracer = trace.NoOpTracer()
_provider: TracerProvider | None = None


def configure_tracing(
    service: str, settings: Settings, processor: SpanProcessor | None = None
) -> bool:
    """Trace this process when the settings name an endpoint (or a test hands its own
    span processor), and stop tracing it otherwise; True when spans are recorded."""
    global _tracer, _provider
    if processor is None and not settings.tracing_endpoint:
        _provider, _tracer = None, trace.NoOpTracer()
        return False
    if processor is None:
        # Imported here: the exporter pulls in protobuf, which an untraced process skips.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.tracing_endpoint))
    sampler = ParentBased(TraceIdRatioBased(settings.tracing_sample_ratio))
    provider = TracerProvider(
        resource=Resource({SERVICE_NAME: f"cutfx-{service}"}), sampler=sampler
    )
    provider.add_span_processor(processor)
    _provider, _tracer = provider, provider.get_tracer(INSTRUMENTATION_NAME)
    return True


def stop_tracing() -> None:
    """Send what is buffered and trace nothing more (as a process exits)."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _provider, _tracer = None, trace.NoOpTracer()


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[trace.Span]:
    """A span around the block, a child of the current one."""
    with _tracer.start_as_current_span(name, attributes=attributes) as current:
        yield current


@contextmanager
def continued(carrier: Mapping[str, Any] | None) -> Iterator[None]:
    """Make the trace context in `carrier` (task or request headers, names in any case)
    the current one."""
    found = {k.lower(): v for k, v in (carrier or {}).items() if isinstance(v, str)}
    token = otel_context.attach(_propagator.extract(found))
    try:
        yield
    finally:
        otel_context.detach(token)


def trace_headers() -> dict[str, str]:
    """The current trace context as headers (none when nothing is traced)."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier


def record_span(name: str, started_at: float, ended_at: float, **attributes: Any) -> None:
    """A span for something already over (the queue wait, a stage timed by a stopwatch),
    from wall-clock seconds, a child of the current span."""
    recorded = _tracer.start_span(name, start_time=_ns(started_at), attributes=attributes)
    recorded.end(end_time=_ns(max(ended_at, started_at)))


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)
