FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY events events
COPY engine engine
COPY projections projections
COPY consumers consumers
COPY verifier verifier
COPY entrypoints entrypoints
RUN pip install --no-cache-dir .
CMD ["vec", "run"]
