"""A short fault campaign per broker (tests/chaos): a minute of random faults against the
multi-host deployment, checked against its history; no anomaly allowed.

Runs in-process after the other multi-host tests (it builds its own site, so the test network
is free again by then). The printed table, and the folder holding the history when an anomaly
is found (test-artifacts/chaos-<broker>-…), are in the test's output.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.chaos.runner import campaign, requirements
from tests.hosts import missing_requirements

if (_missing := missing_requirements()) is not None:
    pytest.skip(_missing, allow_module_level=True)

pytestmark = pytest.mark.multihost

# A failing run's history, schedule and logs stay here: pytest's temporary folders are rotated
# away by the next runs (other worktrees' included) before anyone reads them.
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
SEED = 1
SECONDS = {"redis": 60.0, "amqp": 45.0}  # RabbitMQ's cluster takes longer to set up


@pytest.mark.timeout(420)
@pytest.mark.parametrize("broker", ["redis", "amqp"])
def test_a_short_fault_campaign_finds_no_anomaly(broker: str, model_path: Path) -> None:
    if (missing := requirements(broker)) is not None:
        pytest.skip(missing)
    out_dir = ARTIFACTS / f"chaos-{broker}-seed{SEED}-{time.strftime('%Y%m%d-%H%M%S')}"
    status = campaign(
        duration=SECONDS[broker], seed=SEED, broker=broker, model_path=model_path,
        out_dir=out_dir,
    )  # fmt: skip
    assert status == 0, f"anomalies found: see the table above and {out_dir}"
