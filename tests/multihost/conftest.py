"""The multi-host tier: every test here builds hosts on the one test network (tests/hosts.py),
which only one user at a time may hold. Under pytest-xdist they form one group, run by one worker
in order, while the other workers run the system tier beside them (`make test`)."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = __file__.rsplit("/", 1)[0]
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.xdist_group("test-network"))
