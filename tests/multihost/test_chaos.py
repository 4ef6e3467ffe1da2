"""A short fault campaign per broker (tests/chaos): a minute of random faults against the
multi-host deployment, checked against its history; no anomaly allowed.

Runs in-process after the other multi-host tests (it builds its own site, so the test network
is free again by then). The printed table, and the folder holding the history when an anomaly
is found, are in the test's output.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.runner import campaign, requirements
from tests.hosts import missing_requirements

if (_missing := missing_requirements()) is not None:
    pytest.skip(_missing, allow_module_level=True)

pytestmark = pytest.mark.multihost

SEED = 1
SECONDS = {"redis": 60.0, "amqp": 45.0}  # RabbitMQ's cluster takes longer to set up


@pytest.mark.timeout(420)
@pytest.mark.parametrize("broker", ["redis", "amqp"])
def test_a_short_fault_campaign_finds_no_anomaly(
    broker: str, model_path: Path, tmp_path: Path
) -> None:
    if (missing := requirements(broker)) is not None:
        pytest.skip(missing)
    status = campaign(
        duration=SECONDS[broker], seed=SEED, broker=broker, model_path=model_path,
        out_dir=tmp_path / "chaos",
    )  # fmt: skip
    assert status == 0, f"anomalies found: see the table above and {tmp_path / 'chaos'}"
