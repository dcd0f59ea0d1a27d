"""Observability, one slice: `settings` (ObservabilitySettings: VEC_METRICS_*, VEC_LOG_FORMAT,
VEC_TRACING), `exporter` (the Prometheus series, the hooks the loops report to, the scrape's
fold of the store, `vec run`'s /metrics server). `vec serve` mounts /metrics from it.

Kept empty: reading the settings must not load prometheus_client."""
