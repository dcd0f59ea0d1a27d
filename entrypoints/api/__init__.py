"""The HTTP API (FastAPI on uvicorn), the ops dashboard and the metrics endpoint.

FastAPI because it is the most used Python API framework: OpenAPI 3.1 from the code,
request and response models from pydantic (already the engine's settings library),
Starlette's streaming responses for exports and Server-Sent Events, and the test clients
and tools (schemathesis) that everyone knows. Handlers stay thin: parse, call the engine
or a query, render.
"""
