"""The review page in a real browser (Debian's chromium, driven by Playwright) over a real
service: a reviewer logs in with a `label` key and labels with the keyboard alone; the labels
are checked in the database. A screenshot is saved as test-artifacts/review.png.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx

from docingest.db import make_engine
from docingest.documents.store import get_document
from docingest.embedded import wait_until
from docingest.keys import digest, generate_key
from tests.cooking import cooking_texts
from tests.faults import Processes
from tests.helpers import UNAMBIGUOUS
from tests.pages import ARTIFACTS, start_service

XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'
REVIEWER, FEEDER = generate_key(), generate_key()


def queue(client: httpx.Client) -> list[dict[str, Any]]:
    response = client.get("/review/queue", params={"limit": 50})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def showing(page: Any, document: dict[str, Any]) -> None:
    """Wait until the page shows `document` (its id is in the line above the text)."""
    page.wait_for_selector(f"#meta:has-text('{document['id']}')", timeout=30_000)


def test_a_reviewer_labels_with_the_keyboard(
    browser: Any,
    procs: Processes,
    sqlite_url: str,
    redis_url: str,
    model_path: Path,
    tmp_path: Path,
) -> None:
    keys = f"ann:label:{digest(REVIEWER)},feeder:ingest:{digest(FEEDER)}"
    api = start_service(procs, sqlite_url, redis_url, model_path, tmp_path, API_KEYS=keys)
    texts = [*UNAMBIGUOUS.values(), *cooking_texts(4), f"Chefs say {XSS} tastes of nothing."]
    feeder = {"Authorization": f"Bearer {FEEDER}"}
    with httpx.Client(base_url=api.base_url, timeout=10) as client:
        documents = [{"content": text} for text in texts]
        assert client.post("/documents/bulk", json=documents, headers=feeder).status_code == 202
        client.headers["Authorization"] = f"Bearer {REVIEWER}"
        wait_until(lambda: len(queue(client)) == len(texts), 60, "documents stored")
        order = queue(client)

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    response = page.goto(f"{api.base_url}/review")
    assert response.headers["content-security-policy"].startswith("default-src 'self'")
    page.wait_for_selector("#login:not([hidden])", timeout=30_000)
    page.fill("#api-key", REVIEWER)
    page.click("#login button")

    first, second, third, fourth = order[:4]
    showing(page, first)
    assert page.text_content("#content") == first["content"]
    buttons = page.locator("#choices button").all()
    shown = [button.get_attribute("data-category") for button in buttons]
    assert shown[:3] == [alternative["category"] for alternative in first["alternatives"]]
    assert set(shown[3:]) == {*UNAMBIGUOUS} - set(shown[:3])  # the model's other categories
    page.keyboard.press("n")  # a category the model does not know
    page.keyboard.type("cooking")
    page.keyboard.press("Enter")
    showing(page, second)
    page.keyboard.press("1")  # the model's own category
    showing(page, third)
    page.keyboard.press("s")
    showing(page, fourth)
    page.keyboard.press("2")  # the model's second choice
    page.wait_for_selector("#reviewed:text('3')", timeout=30_000)

    engine = make_engine(sqlite_url)
    try:
        labels = {
            document["id"]: get_document(engine, uuid.UUID(document["id"]))
            for document in order[:4]
        }
    finally:
        engine.dispose()
    expected = {
        first["id"]: "cooking",
        second["id"]: second["category"],
        third["id"]: None,
        fourth["id"]: fourth["alternatives"][1]["category"],
    }
    assert {i: stored.label for i, stored in labels.items() if stored} == expected
    assert {stored.label_by for stored in labels.values() if stored and stored.label} == {"ann"}
    assert page.text_content("#agreement") == "33% (1/3)"
    assert page.text_content("#skipped") == "1"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "review.png"), full_page=True)

    # Through every document left, the hostile one included: its text is text, never markup.
    for document in order[4:]:
        showing(page, document)
        page.keyboard.press("s")
    page.wait_for_selector("#empty:not([hidden])", timeout=30_000)
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert not [text for text in console if "Content Security Policy" in text], console

    page.goto(f"{api.base_url}/review")  # a fresh walk: the skipped come back, first the least
    showing(page, third)  # confident, with the key kept in the tab
