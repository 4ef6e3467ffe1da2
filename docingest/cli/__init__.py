"""The `docingest` command. Each module holds one group of commands:

service: run the processes (up, api, worker, migrate); train: train a model; registry: list,
show and activate models, reclassify; failures: inspect and replay failures; keys: API keys;
send: feed files to a running service; stats: figures.
"""

from docingest.cli import failures, keys, registry, send, service, stats, train
from docingest.cli.app import app

__all__ = ["app", "failures", "keys", "registry", "send", "service", "stats", "train"]
