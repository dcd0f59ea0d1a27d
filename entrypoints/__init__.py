"""How people and services come in: the `vec` CLI (and, above the engine, the process roles).
Thin: parse, call the service or a query, render. Nothing below imports this package."""
