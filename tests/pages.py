"""What the browser tests of the service's pages share (tests/system/test_dashboard.py,
tests/system/test_review.py): Debian's chromium driven by Playwright (the `browser` fixture of
conftest.py), and a service to point it at.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.faults import Api, Processes, service_env

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@contextmanager
def chromium() -> Iterator[object]:
    """A headless chromium; the test is skipped, saying why, when it or Playwright is missing."""
    if not Path(CHROMIUM).exists():
        pytest.skip("needs Debian's chromium: `make browser` (apt-get install chromium, as root)")
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def start_service(
    procs: Processes,
    sqlite_url: str,
    redis_url: str,
    model_path: Path,
    tmp_path: Path,
    *,
    worker: bool = True,
    **env: str,
) -> Api:
    procs.env = service_env(
        database_url=sqlite_url,
        broker_url=redis_url,
        model_path=model_path,
        data_dir=tmp_path,
        METRICS_FLUSH_SECONDS="0.2",
        **env,
    )
    if worker:  # first: it loads its model while the API starts
        procs.worker(processes=1, threads=1)
    return procs.api()
