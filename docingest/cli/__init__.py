"""The `docingest` command. Each module holds one group of commands:

service: run the processes (up, api, worker, migrate); models: train and manage models;
failures: inspect and replay failures.
"""

from docingest.cli import failures, models, service
from docingest.cli.app import app

__all__ = ["app", "failures", "models", "service"]
