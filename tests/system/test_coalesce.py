"""The worker's group commit: messages held at once are classified and stored as one batch."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from docingest.connections import connect
from docingest.embedded import wait_until
from docingest.queue.messages import ingest_message
from docingest.schemas import utcnow
from docingest.settings import Settings
from tests.faults import Processes, content_for, count_rows, service_env


@pytest.mark.timeout(120)
def test_a_worker_stores_single_posts_in_batches_and_isolates_a_poison_document(
    postgres_url: str, redis_url: str, model_path: Path, tmp_path: Path, procs: Processes
) -> None:
    """Real processes: 200 single POSTs queued as 200 messages while no worker runs, and one
    message whose content PostgreSQL refuses (NUL: the API would refuse it, a message can carry
    it). One worker process with 8 threads: batches hold several messages, every document is
    stored, and the refused one becomes a failure without failing its batch."""
    procs.env = service_env(
        database_url=postgres_url,
        broker_url=redis_url,
        model_path=model_path,
        data_dir=tmp_path,
        LOG_FORMAT="json",
    )
    api = procs.api()
    with httpx.Client(base_url=api.base_url, timeout=10) as client:
        for n in range(200):
            response = client.post("/documents", json={"content": content_for(n, "single")})
            assert response.status_code == 202
    poison = _publish_poison(postgres_url, redis_url)
    worker = procs.worker(threads=8)
    wait_until(lambda: count_rows(postgres_url) >= 200, 60, "200 documents stored")
    with httpx.Client(base_url=api.base_url, timeout=10) as client:
        wait_until(
            lambda: client.get(f"/documents/{poison}/status").json()["status"] == "failed",
            30,
            "the poison document recorded as failed",
        )
    batches = _batch_lines(worker.log_path)
    messages = sum(batch["messages"] for batch in batches)
    print(f"FIGURES coalescing: {messages} messages in {len(batches)} batches")
    assert messages == 201
    assert len(batches) < messages / 2
    assert sum(batch["documents"] for batch in batches) == 201


def _publish_poison(database_url: str, broker_url: str) -> uuid.UUID:
    settings = Settings(_env_file=None, database_url=database_url, broker_url=broker_url)
    connections = connect(settings)
    poison = uuid.uuid4()
    document = {"id": str(poison), "content": "nul \x00 here", "version": 1}
    try:
        connections.queue.publish([ingest_message([document | {"accepted_at": utcnow()}])])
    finally:
        connections.close()
    return poison


def _batch_lines(log_path: Path) -> list[dict[str, Any]]:
    lines = [line for line in log_path.read_text().splitlines() if line.startswith("{")]
    events = [json.loads(line) for line in lines]
    return [event for event in events if event.get("event") == "batch processed"]
