# One image for every role: the default CMD serves the API; the same image runs
# `docingest worker` and `docingest migrate` (see compose.yaml and docs/deploy.md).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY docingest ./docingest
RUN pip install . \
    && useradd --system --uid 10001 --no-create-home --home-dir /app docingest \
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
