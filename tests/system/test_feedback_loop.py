"""The whole loop on real processes (API, worker, the CLI) over PostgreSQL and Redis: documents of
a category the model has never seen arrive, people label the least confident ones through the
API, `train db --with bbc --activate-if-better` learns the category and is activated,
`reclassify` moves the unlabelled ones, and later labels agree with the model more often.

The cooking texts are generated from templates (tests/cooking.py): an easy new category, so the
figures show the loop working, not how hard a real new category is. A FIGURES line prints them.
"""

from __future__ import annotations

import random
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from docingest.embedded import wait_until
from docingest.keys import digest, generate_key
from docingest.model import training
from docingest.model.datasets import load_bbc
from tests.cooking import cooking_texts
from tests.faults import Processes, service_env

COOKING, NEWS = 200, 40
BEFORE, AFTER = 60, 20
FEEDER, REVIEWER, OPS = generate_key(), generate_key(), generate_key()
KEYS = f"feeder:ingest:{digest(FEEDER)},reviewer:label:{digest(REVIEWER)},ops:admin:{digest(OPS)}"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def news_articles(count: int) -> list[tuple[str, str]]:
    """BBC articles (text, category) the active model was trained on: known categories."""
    texts, categories = load_bbc()
    split = training.split_corpus(texts, categories)
    chosen = random.Random(15).sample(range(len(split.train_texts)), count)
    return [(split.train_texts[i], split.train_labels[i]) for i in chosen]


@pytest.fixture
def service(
    procs: Processes, postgres_url: str, redis_url: str, model_path: Path, tmp_path: Path
) -> str:
    procs.env = service_env(
        database_url=postgres_url,
        broker_url=redis_url,
        model_path=model_path,
        data_dir=tmp_path,
        API_KEYS=KEYS,
        METRICS_FLUSH_SECONDS="0.2",
    )
    procs.worker(processes=1, threads=2)
    return procs.api().base_url


def cli(procs: Processes, *arguments: str) -> float:
    """Run a docingest command as an operator would; its seconds."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "docingest", *arguments],
        env=procs.env,
        cwd=procs.cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return time.monotonic() - started


def label_least_confident(client: httpx.Client, truth: dict[str, str], count: int) -> None:
    """What a reviewer on /review does: the least confident unlabelled first, the true category,
    for the version shown."""
    while count:
        items = client.get("/review/queue", params={"limit": count}).json()["items"]
        assert items, "the review queue ran dry"
        for item in items:
            body = {"category": truth[item["id"]], "version": item["version"]}
            response = client.put(f"/documents/{item['id']}/label", json=body)
            assert response.status_code == 200, response.text
        count -= len(items)


def drift_of(client: httpx.Client, model_version: str) -> dict[str, Any]:
    models = client.get("/stats", headers=bearer(OPS)).json()["drift"]["models"]
    return next(model for model in models if model["model_version"] == model_version)


def documents(client: httpx.Client, **filters: Any) -> list[dict[str, Any]]:
    page = client.get("/documents", params={"limit": 1000, **filters}).json()
    assert page["next_cursor"] is None
    items: list[dict[str, Any]] = page["items"]
    return items


def test_labels_teach_the_model_a_new_category(service: str, procs: Processes) -> None:
    started = time.monotonic()
    articles = news_articles(NEWS)
    texts = [*cooking_texts(COOKING, seed=2026), *(text for text, _ in articles)]
    categories = ["cooking"] * COOKING + [category for _, category in articles]
    with httpx.Client(base_url=service, timeout=30, headers=bearer(REVIEWER)) as client:
        sent = client.post(
            "/documents/bulk", json=[{"content": text} for text in texts], headers=bearer(FEEDER)
        )
        assert sent.status_code == 202, sent.text
        truth = {
            item["id"]: category
            for item, category in zip(sent.json()["items"], categories, strict=True)
        }
        wait_until(lambda: len(documents(client)) == len(texts), 120, "all stored")
        old = client.get("/model", headers=bearer(OPS)).json()["version"]
        cooking = [d for d in documents(client) if truth[d["id"]] == "cooking"]
        called = Counter(document["category"] for document in cooking)
        assert "cooking" not in called
        unsure = statistics.mean(document["confidence"] for document in cooking)

        label_least_confident(client, truth, BEFORE)
        before = drift_of(client, old)
        assert before["labels"] == BEFORE
        disagreeing = len(documents(client, disagreement=True))

        train_seconds = cli(procs, "train", "db", "--with", "bbc", "--activate-if-better")
        new = client.get("/model", headers=bearer(OPS)).json()
        assert new["version"] != old, "the model trained on the labels was not activated"
        assert "cooking" in new["labels"]
        reclassify_seconds = cli(procs, "reclassify")

        unlabelled = documents(client, labelled=False)
        assert {document["model_version"] for document in unlabelled} == {new["version"]}
        labelled = documents(client, labelled=True)
        assert {document["model_version"] for document in labelled} == {old}  # left alone
        cooking_left = [document for document in unlabelled if truth[document["id"]] == "cooking"]
        moved = sum(document["category"] == "cooking" for document in cooking_left)
        news_kept = sum(
            document["category"] == truth[document["id"]]
            for document in unlabelled
            if truth[document["id"]] != "cooking"
        )

        label_least_confident(client, truth, AFTER)
        after = drift_of(client, new["version"])
        comparison = {part["name"]: part for part in new["comparison"]["held_out"]}

    print(
        f"FIGURES feedback-loop: {len(texts)} documents ({COOKING} cooking, {NEWS} BBC News); "
        f"the old model called the cooking texts {dict(called.most_common())}, mean confidence "
        f"{unsure:.3f}; agreement over the {before['labels']} labels before: "
        f"{before['agreement']:.3f} ({disagreeing} disagreeing); train db --with bbc: "
        f"{train_seconds:.1f} s, held-out macro-F1 of the new category (labels, "
        f"{comparison['labels']['learned']['documents']}) "
        f"{comparison['labels']['learned']['macro_f1']:.3f}, new/active bbc "
        f"({comparison['bbc']['documents']}) "
        f"{comparison['bbc']['new']['macro_f1']:.4f}/{comparison['bbc']['active']['macro_f1']:.4f}"
        f"; reclassify: {reclassify_seconds:.1f} s, unlabelled cooking moved to cooking "
        f"{moved}/{len(cooking_left)}, unlabelled news kept right {news_kept}/"
        f"{len(unlabelled) - len(cooking_left)}; agreement over the {after['labels']} labels "
        f"after: {after['agreement']:.3f}; module {time.monotonic() - started:.1f} s"
    )
    assert moved == len(cooking_left)
    assert after["labels"] == AFTER
    assert after["agreement"] > before["agreement"]


def test_a_new_users_six_labels_never_replace_the_news_model(
    service: str, procs: Processes
) -> None:
    """Issue 24's scenario, as a new user ran it: six documents, five labelled with a new
    category and one with an old one, `train db --activate-if-better` without `--with`. The
    news model must stay active: a budget article is still `politics` (with `--activate`
    instead, the cooking model takes over and this fails)."""
    sports = next(text for text, category in news_articles(NEWS) if category == "sports")
    texts = [*cooking_texts(5, seed=7), sports]
    categories = ["cooking"] * 5 + ["sports"]
    with httpx.Client(base_url=service, timeout=30, headers=bearer(REVIEWER)) as client:
        sent = client.post(
            "/documents/bulk", json=[{"content": text} for text in texts], headers=bearer(FEEDER)
        )
        assert sent.status_code == 202, sent.text
        wait_until(lambda: len(documents(client)) == len(texts), 120, "all stored")
        news_model = client.get("/model", headers=bearer(OPS)).json()["version"]
        for item, category in zip(sent.json()["items"], categories, strict=True):
            body = {"category": category, "version": item["version"]}
            labelled = client.put(f"/documents/{item['id']}/label", json=body)
            assert labelled.status_code == 200, labelled.text
        trained = subprocess.run(
            [sys.executable, "-m", "docingest", "train", "db", "--activate-if-better"],
            env=procs.env, cwd=procs.cwd, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert client.get("/model", headers=bearer(OPS)).json()["version"] == news_model, (
            trained.stdout[-3000:]
        )
        budget = "MPs voted on the government's budget in parliament after a long debate."
        posted = client.post("/documents", json={"content": budget}, headers=bearer(FEEDER))
        assert posted.status_code == 202, posted.text
        document_id = posted.json()["id"]
        wait_until(lambda: client.get(f"/documents/{document_id}").status_code == 200, 60, "stored")
        stored = client.get(f"/documents/{document_id}").json()
    assert (stored["category"], stored["model_version"]) == ("politics", news_model)
    print(f"FIGURES six labels, no --with: exit {trained.returncode}, news model kept")
