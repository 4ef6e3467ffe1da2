# One image for every role: the default CMD serves the API; the same image runs
# `docingest worker` and `docingest migrate` (see compose.yaml and docs/deploy.md).

# Build stage: the virtual environment, from uv.lock (versions and hashes), with the uv version
# pyproject.toml requires. uv stays here; the image gets only the environment.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN pip install "uv==$(sed -n 's/^required-version = "==\(.*\)"$/\1/p' pyproject.toml)"
# Dependencies first: their layer is rebuilt only when the lock changes, not with the code.
# The `otel` extra too: traces are off until OTEL_* variables ask for them (docs/operations.md).
RUN uv sync --locked --no-editable --no-install-project --extra otel
COPY docingest ./docingest
COPY clients/python ./clients/python
RUN uv sync --locked --no-editable --extra otel

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/app/.venv/bin:$PATH

WORKDIR /app
COPY --from=build /app/.venv /app/.venv
RUN useradd --system --uid 10001 --no-create-home --home-dir /app docingest \
    && mkdir -p /app/var \
    && chown docingest /app/var

USER docingest
ENV DATA_DIR=/app/var \
    MODEL_PATH=/app/var/models/default.skops \
    HOST=0.0.0.0 \
    PORT=8000
# The built-in model is trained at build time (half a second, seed 42): every container of
# this image, API or worker, on any machine, holds the same bytes.
RUN docingest train --output "$MODEL_PATH"

EXPOSE 8000
CMD ["docingest", "api"]
