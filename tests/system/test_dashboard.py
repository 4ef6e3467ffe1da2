"""The dashboard in a real browser (Debian's chromium, driven by Playwright) over a real service.

Documents flow while the page is open: its figures must change, a failure's error must show,
and a posted `<script>` (in a document and in an error) must never run. A screenshot is saved
as test-artifacts/dashboard.png.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from docingest.api import create_app
from docingest.connections import connected
from docingest.embedded import wait_until
from docingest.keys import digest, generate_key
from docingest.model.classifier import Classifier
from docingest.model.scoring import Prediction
from docingest.schemas import QueuedDocument, utcnow
from docingest.settings import Settings
from docingest.worker.ingest import ingest
from tests.faults import Processes, new_documents
from tests.helpers import make_settings
from tests.pages import ARTIFACTS, start_service

XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'


class HostileClassifier(Classifier):
    """The real model, except that it raises with the hostile text as its error message."""

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        if any(XSS in text for text in texts):
            raise ValueError(XSS)
        return super().predict(texts)


def figure(page: object, element: str) -> int:
    text = (page.text_content(f"#{element}") or "").replace(",", "")  # type: ignore[attr-defined]
    return int(text) if text.isdigit() else -1


def wait_for_figure(page: object, element: str, at_least: int, timeout: float = 60) -> None:
    """Polled from here: the page's CSP forbids the eval behind Playwright's wait_for_function."""
    wait_until(lambda: figure(page, element) >= at_least, timeout, f"#{element} >= {at_least}")


def fail_one_document(sqlite_url: str, redis_url: str, model_path: Path) -> uuid.UUID:
    """What a classifier bug does in a worker (see test_failures.py), error text included."""
    document = QueuedDocument(id=uuid.uuid4(), content=XSS, version=1, accepted_at=utcnow())
    settings = Settings(_env_file=None, database_url=sqlite_url, broker_url=redis_url)
    with connected(settings) as connections:
        ingest(
            [document.to_message()],
            engine=connections.engine,
            classifier=HostileClassifier.load(model_path),
            ledger=connections.ledger,
        )
    return document.id


def test_the_dashboard_shows_documents_flowing_and_runs_no_posted_script(
    browser: object,
    procs: Processes,
    sqlite_url: str,
    redis_url: str,
    model_path: Path,
    tmp_path: Path,
) -> None:
    api = start_service(procs, sqlite_url, redis_url, model_path, tmp_path)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})  # type: ignore[attr-defined]
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    response = page.goto(f"{api.base_url}/dashboard")
    assert response.headers["content-security-policy"].startswith("default-src 'self'")
    wait_for_figure(page, "stored", 0, timeout=30)

    with httpx.Client(base_url=api.base_url, timeout=10) as client:
        assert client.post("/documents", json={"content": XSS}).status_code == 202
        documents = new_documents(20, "dashboard")
        assert client.post("/documents/bulk", json=documents).status_code == 202
    failed_id = fail_one_document(sqlite_url, redis_url, model_path)

    wait_for_figure(page, "stored", 21)
    wait_for_figure(page, "processed", 21, timeout=30)
    page.wait_for_selector(f"#failures td:text('{failed_id}')", timeout=30_000)
    page.wait_for_selector("#rate-chart polyline", state="attached", timeout=30_000)

    assert figure(page, "failed") == 1
    assert figure(page, "queued") == 0
    error_cell = page.locator("#failures tr td:last-child").first
    assert error_cell.text_content() == f"ValueError: {XSS}"
    assert page.locator("#failures img, #failures script").count() == 0
    assert page.locator("#categories tr").count() >= 2
    assert page.text_content("#queues").startswith("documents")
    classified = page.locator("#drift tr").first.locator("td").nth(1)  # by the one model
    wait_until(lambda: classified.text_content() == "21", 30, "21 classified in #drift")
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert not [text for text in console if "Content Security Policy" in text], console

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)


def test_the_dashboard_asks_for_a_key_and_sends_it(
    browser: object,
    procs: Processes,
    sqlite_url: str,
    redis_url: str,
    model_path: Path,
    tmp_path: Path,
) -> None:
    key = generate_key()
    api = start_service(
        procs,
        sqlite_url,
        redis_url,
        model_path,
        tmp_path,
        worker=False,
        API_KEYS=f"dashboard:read:{digest(key)}",
    )
    assert httpx.get(f"{api.base_url}/stats").status_code == 401
    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(f"{api.base_url}/dashboard")
    page.wait_for_selector("#login:not([hidden])")
    assert not page.text_content("#stored").isdigit()

    page.fill("#api-key", key)
    page.click("#login button")
    page.wait_for_selector("#login", state="hidden", timeout=30_000)
    assert figure(page, "stored") == 0
    assert page.evaluate("sessionStorage.getItem('docingest-api-key')") == key


@pytest.mark.parametrize("page", ["dashboard", "review"])
@pytest.mark.parametrize("name", [".js", ".css", ".html", "x.js", "dashboard.py", "review"])
def test_a_name_that_is_not_one_of_the_page_s_files_is_a_json_404(
    page: str, name: str, sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    """A bare suffix (`/dashboard/.js`) names no file: a 404 like any other, never a 500."""
    settings = make_settings(sqlite_url, redis_url, tmp_path / "model.skops", tmp_path)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        response = client.get(f"/{page}/{name}")
        assert (response.status_code, response.json()) == (404, {"detail": "Not found"})
        assert client.get(f"/{page}/{page}.js").status_code == 200
