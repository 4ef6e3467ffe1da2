"""The layout holds: no import cycles, the broker known in one package, a worker's batch logic
importable without side effects."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docingest

PACKAGE = Path(docingest.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[str, ...]]:
    """Every import, at any depth (functions too), `TYPE_CHECKING` blocks left out, as the
    modules it may name, most specific first: `from a import b` names `a.b` if that is a
    module, else `a`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((alias.name,) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            for alias in node.names:
                yield f"{base}.{alias.name}", base


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        graph[name] = set()
        for candidates in imported(tree, name, path.name == "__init__.py"):
            target = next((c for c in candidates if c in modules), None)
            if target is not None and target != name:
                graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles_in_the_package() -> None:
    assert cycles(import_graph()) == []


def test_only_the_queue_package_knows_how_brokers_store_messages() -> None:
    """No Dramatiq broker class imported, no broker key spelled, outside docingest/queue/."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "queue" in path.relative_to(PACKAGE).parts[:1]:
            continue
        text = path.read_text()
        if "dramatiq.brokers" in text or '"dramatiq:' in text or "'dramatiq:" in text:
            offenders.append(str(path.relative_to(PACKAGE)))
    assert offenders == []


GLOBAL_STATE = """
import importlib, logging, sys
import dramatiq.broker, dramatiq.message, structlog
def state():
    return (
        list(logging.root.handlers),
        logging.root.level,
        structlog.is_configured(),
        dramatiq.broker.global_broker,
        dramatiq.message.global_encoder,
    )
before = state()
importlib.import_module(sys.argv[1])
print("same" if state() == before else "changed")
"""


def import_changes_global_state(module: str) -> bool:
    result = subprocess.run(
        [sys.executable, "-c", GLOBAL_STATE, module],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "BROKER_URL": "redis://127.0.0.1:9/0"},
    )
    return result.stdout.strip().splitlines()[-1] == "changed"


def test_importing_the_batch_logic_changes_no_global_state() -> None:
    """Root log handlers, structlog's configuration, Dramatiq's broker and encoder: untouched by
    `docingest.worker.ingest`, set by `docingest.worker.actors` (what `dramatiq` loads)."""
    assert not import_changes_global_state("docingest.worker.ingest")
    assert import_changes_global_state("docingest.worker.actors")
