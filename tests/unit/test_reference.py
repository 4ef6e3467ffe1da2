"""docs/reference/ is what scripts/reference.py makes from the code: no page drifts from it, and no
environment variable the code reads goes undocumented. No server: the app is built, never
started."""

from __future__ import annotations

import ast
import difflib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import Field

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "reference.py"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docingest_reference_script", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


reference = _load_script()


@pytest.fixture(scope="module")
def pages() -> dict[Path, str]:
    rendered: dict[Path, str] = reference.render()
    return rendered


@pytest.mark.parametrize("name", sorted(reference.PAGES))
def test_page_matches_the_code(name: str, pages: dict[Path, str]) -> None:
    path = reference.REFERENCE / name
    expected = pages[path]
    assert expected.startswith(reference.GENERATED + "\n")
    actual = path.read_text(encoding="utf-8") if path.is_file() else ""
    if actual != expected:
        diff = difflib.unified_diff(
            actual.splitlines(),
            expected.splitlines(),
            f"{name} (on disk)",
            f"{name} (from the code)",
            lineterm="",
        )
        excerpt = "\n".join(list(diff)[:40])
        pytest.fail(
            f"docs/reference/{name} differs from the code: run `{reference.COMMAND}` "
            f"(`make reference`) and commit the result.\n{excerpt}",
            pytrace=False,
        )


def test_every_environment_variable_the_code_reads_is_documented() -> None:
    problems = reference.undocumented_variables()
    assert not problems, "\n".join(problems)


def test_every_setting_has_a_description() -> None:
    from docingest.settings import Settings

    missing = [name for name, field in Settings.model_fields.items() if not field.description]
    assert not missing, (
        f"Settings fields without a description (docs/reference/configuration.md shows it): "
        f"{', '.join(missing)}; add `description=` to their Field in docingest/settings.py"
    )


def test_a_new_setting_changes_the_configuration_page(monkeypatch: pytest.MonkeyPatch) -> None:
    import docingest.settings

    class Extended(docingest.settings.Settings):
        reference_probe_seconds: float = Field(default=1.5, gt=0, description="A probe.")

    before = reference.configuration()
    monkeypatch.setattr(docingest.settings, "Settings", Extended)
    after = reference.configuration()
    assert "| `REFERENCE_PROBE_SECONDS` | `float` (> 0) | `1.5` | A probe. |" in after
    assert after != before


def test_a_page_edited_by_hand_differs(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("generated\n", encoding="utf-8")
    assert reference.differing({page: "generated\n"}) == []
    page.write_text("generated\nand edited\n", encoding="utf-8")
    assert reference.differing({page: "generated\n"}) == [page]
    assert reference.differing({tmp_path / "missing.md": "generated\n"}) == [
        tmp_path / "missing.md"
    ]


def test_the_scan_finds_every_way_to_read_a_variable() -> None:
    source = """
import os
from os import environ, getenv
import typer
NAME = "FROM_CONSTANT"
os.environ.get("GET")
os.environ["SUBSCRIPT"]
os.environ["WRITTEN"] = "not a read"
"COMPARED" in os.environ
os.getenv("GETENV")
getenv("BARE_GETENV")
environ.get(NAME)
def read(environ):
    return environ.get("PARAMETER")
typer.Option(envvar="ENVVAR")
typer.Option(envvar=["ENVVAR_A", "ENVVAR_B"])
os.environ.get(os.sep)
"""
    tree = ast.parse(source)
    constants = reference._constants(tree)
    found: list[str] = []
    for node in reference._variable_nodes(tree):
        if isinstance(node, ast.Constant):
            found.append(str(node.value))
        elif isinstance(node, ast.Name):
            found.append(constants[node.id])
        else:
            found.append(ast.unparse(node))
    assert sorted(found) == sorted(
        [
            "GET",
            "SUBSCRIPT",
            "COMPARED",
            "GETENV",
            "BARE_GETENV",
            "FROM_CONSTANT",
            "PARAMETER",
            "ENVVAR",
            "ENVVAR_A",
            "ENVVAR_B",
            "os.sep",
        ]
    )
