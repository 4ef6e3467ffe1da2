"""The Python client as a distribution of its own (clients/python, `docingest-client`): it
declares httpx and pydantic only, and importing it loads nothing of the service. No network:
what it declares is read from its pyproject.toml, what it loads from a subprocess."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import sysconfig
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "python"
DEPENDENCIES = {"httpx", "pydantic"}
# What the client must never load: the service, its stack, and orjson (the service's JSON).
FORBIDDEN = ("docingest", "sklearn", "sqlalchemy", "sqlmodel", "dramatiq", "orjson", "numpy")

IMPORT = """
import json, sys
before = set(sys.modules)
import docingest_client
from docingest_client import AsyncClient, Client, schemas
loaded = {name.partition(".")[0] for name in set(sys.modules) - before}
print(json.dumps({"file": docingest_client.__file__, "loaded": sorted(loaded)}))
"""


def _name(requirement: str) -> str:
    """The normalized distribution name of a PEP 508 requirement."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement.strip())
    assert name is not None, requirement
    return re.sub(r"[-_.]+", "-", name.group()).lower()


def _import(*options: str, path: list[str] | None = None) -> dict[str, Any]:
    """Import the client in a fresh interpreter of the service's environment; `path` first on
    sys.path when given."""
    script = IMPORT if path is None else f"import sys; sys.path[:0] = {path!r}\n{IMPORT}"
    done = subprocess.run(
        [sys.executable, *options, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=CLIENT.parent,
    )
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def _closure(names: set[str]) -> set[str]:
    """The installed distributions `names` need, with their extras' (httpx imports its CLI's
    click, rich and pygments when they are installed) and whatever their markers say: a superset
    is enough here."""
    needed: set[str] = set()
    pending = list(names)
    while pending:
        name = pending.pop()
        if name in needed:
            continue
        try:
            requirements = metadata.requires(name) or []
        except metadata.PackageNotFoundError:  # for another Python (`python_version < ...`)
            continue
        needed.add(name)
        pending += [_name(requirement) for requirement in requirements]
    return needed


def test_the_distribution_declares_httpx_and_pydantic_only() -> None:
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "docingest-client"
    assert project["requires-python"] == ">=3.11"
    assert {_name(requirement) for requirement in project["dependencies"]} == DEPENDENCIES
    assert not project.get("optional-dependencies")
    assert (CLIENT / "docingest_client" / "py.typed").is_file()


def test_the_service_ships_the_client_package_from_its_folder() -> None:
    """`pip install .` of the service installs `docingest_client` too, from clients/python."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "clients/python" in setuptools["packages"]["find"]["where"]
    assert "py.typed" in setuptools["package-data"]["docingest_client"]


def test_importing_the_client_loads_nothing_of_the_service() -> None:
    answer = _import()
    assert Path(answer["file"]).is_relative_to(CLIENT / "docingest_client")
    loaded = set(answer["loaded"])
    assert loaded.isdisjoint(FORBIDDEN), loaded & set(FORBIDDEN)


def test_the_client_needs_nothing_but_its_declared_dependencies() -> None:
    """Without `site` (so without the service's editable install), with only clients/python and
    the installed packages on the path: the client imports, and every module it loads is the
    standard library's or belongs to httpx, pydantic or what they require."""
    answer = _import("-I", "-S", path=[str(CLIENT), sysconfig.get_paths()["purelib"]])
    allowed = _closure(DEPENDENCIES)
    owners = metadata.packages_distributions()
    foreign = {
        module: owners.get(module, [])
        for module in answer["loaded"]
        if module not in sys.stdlib_module_names
        and not module.startswith("_sysconfigdata_")  # the standard library's, named by platform
        and module != "docingest_client"
        and not {_name(owner) for owner in owners.get(module, [])} & allowed
    }
    assert foreign == {}
