"""The `docingest` command. Each module holds one group of commands:

service: run the processes (up, api, worker, migrate); train: train a model; model: list, show,
import and activate models; reclassify: bring documents up to date with a model; failures:
inspect and replay failures; keys: API keys; send: feed files to a running service; stats: figures;
changes: the change feed as JSON lines; webhooks: deliver the feed to endpoints, list, resume.
"""

from docingest.cli import (
    changes,
    failures,
    keys,
    model,
    reclassify,
    send,
    service,
    stats,
    train,
    webhooks,
)
from docingest.cli.app import app

__all__ = [
    "app",
    "changes",
    "failures",
    "keys",
    "model",
    "reclassify",
    "send",
    "service",
    "stats",
    "train",
    "webhooks",
]
