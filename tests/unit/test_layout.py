"""The layout's rules, checked on the code's own imports (docs/architecture.md states them):

- the top level keeps only what every part shares, and imports no package of docingest
  (`connections.py`, where every process opens its handles, excepted);
- a domain package (where a document waits, is stored, labelled, observed; the model; the
  client side) never imports an entry point (`api`, `cli`, `worker`);
- the API never loads the worker or scikit-learn, the worker never loads the API;
- no import cycle; only `queue/` knows how brokers store messages;
- importing any module changes no global state, except `worker.actors`, which `dramatiq` loads.
"""

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


def imported(
    tree: ast.Module, module: str, is_package: bool, *, top_level_only: bool = False
) -> Iterator[tuple[str, ...]]:
    """Every import, at any depth (functions too) unless `top_level_only`, `TYPE_CHECKING`
    blocks left out, as the modules it may name, most specific first: `from a import b` names
    `a.b` if that is a module, else `a`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    nodes = _top_level(tree.body) if top_level_only else ast.walk(tree)
    for node in nodes:
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


def _top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements run on import: the module's own, and those of its `if`/`try` blocks."""
    for node in body:
        yield node
        if isinstance(node, ast.If | ast.Try):
            for block in (node.body, node.orelse, getattr(node, "finalbody", [])):
                yield from _top_level(block)
            for handler in getattr(node, "handlers", []):
                yield from _top_level(handler.body)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def import_graph(*, top_level_only: bool = False, external: bool = False) -> dict[str, set[str]]:
    """Module -> modules of docingest it imports (and, with `external`, the top-level name of
    every other package it imports)."""
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        graph[name] = set()
        imports = imported(tree, name, path.name == "__init__.py", top_level_only=top_level_only)
        for candidates in imports:
            target = next((c for c in candidates if c in MODULES), None)
            if target is not None and target != name:
                graph[name].add(target)
            elif target is None and external and not candidates[-1].startswith("docingest."):
                graph[name].add(candidates[-1].split(".")[0])
    return graph


def reachable(graph: dict[str, set[str]], starts: list[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(starts)
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return seen


def package_of(module: str) -> str:
    """`docingest.labels.service` -> `labels`; a top-level module -> its own name."""
    return module.split(".")[1] if module.count(".") else ""


# What every part shares: the whole top level of docingest/, besides __init__ and __main__.
SHARED = {"settings", "db", "tables", "schemas", "connections", "embedded", "keys"}
ENTRY_POINTS = {"api", "cli", "worker"}
DOMAINS = {
    "queue",
    "ledger",
    "documents",
    "changes",
    "failures",
    "labels",
    "model",
    "observe",
    "client",
}


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


def test_the_top_level_keeps_only_what_every_part_shares() -> None:
    """At most 8 modules besides `__init__` and `__main__`, each in SHARED (docs/architecture.md
    says why each is shared); every other module lives in a package named by its question."""
    top = {path.stem for path in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    assert top == SHARED
    assert len(top) <= 8
    packages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    assert packages == ENTRY_POINTS | DOMAINS


def test_every_package_is_in_the_architecture_page() -> None:
    """docs/architecture.md's module table names every package and shared module."""
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    missing = [f"{name}/" for name in sorted(ENTRY_POINTS | DOMAINS) if f"`{name}/" not in page]
    missing += [f"{name}.py" for name in sorted(SHARED) if f"`{name}.py`" not in page]
    assert missing == []


def test_shared_modules_import_no_package() -> None:
    """Plumbing depends on nothing above it; `connections` opens the handles of every process
    (the queue, the ledger, the metrics store) and is the one shared module allowed to."""
    graph = import_graph()
    offenders = {
        (module, target)
        for module, targets in graph.items()
        if package_of(module) in SHARED - {"connections"}
        for target in targets
        if package_of(target) not in SHARED
    }
    assert offenders == set()


def test_domain_packages_import_no_entry_point() -> None:
    graph = import_graph()
    offenders = {
        (module, target)
        for module, targets in graph.items()
        if package_of(module) in DOMAINS | SHARED
        for target in targets
        if package_of(target) in ENTRY_POINTS
    }
    assert offenders == set()


def test_the_api_loads_neither_the_worker_nor_scikit_learn() -> None:
    """Nothing the web tier imports when it starts (module-level imports, followed through every
    module they reach) is the worker or a scientific library: an API process stays small and
    starts fast. (Activating a model loads it, inside that call, to refuse what no worker could
    load.)"""
    graph = import_graph(top_level_only=True, external=True)
    loaded = reachable(graph, [m for m in MODULES if package_of(m) == "api"])
    assert {m for m in loaded if package_of(m) == "worker"} == set()
    assert loaded & {"sklearn", "scipy", "skops", "numpy", "matplotlib"} == set()


def test_the_worker_never_imports_the_api() -> None:
    graph = import_graph()
    loaded = reachable(graph, [m for m in MODULES if package_of(m) == "worker"])
    assert {m for m in loaded if package_of(m) in {"api", "cli"}} == set()


GLOBAL_STATE = """
import importlib, logging, sys
import dramatiq.broker, dramatiq.message, prometheus_client, structlog
def state():
    return (
        list(logging.root.handlers),
        logging.root.level,
        structlog.is_configured(),
        dramatiq.broker.global_broker,
        dramatiq.message.global_encoder,
        set(prometheus_client.REGISTRY._collector_to_names),
    )
for module in sys.argv[1:]:
    before = state()
    importlib.import_module(module)
    print(module, "same" if state() == before else "changed")
"""


def global_state_changes(*modules: str) -> dict[str, bool]:
    """Each module imported in turn in one fresh interpreter: did importing it change the root
    logger, structlog, Dramatiq's global broker or encoder, or Prometheus's default registry?"""
    result = subprocess.run(
        [sys.executable, "-c", GLOBAL_STATE, *modules],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "BROKER_URL": "redis://127.0.0.1:9/0"},
    )
    lines = [line.split() for line in result.stdout.splitlines() if line.count(" ") == 1]
    return {module: verdict == "changed" for module, verdict in lines}


def test_importing_any_module_changes_no_global_state() -> None:
    """Every module but the one `dramatiq docingest.worker.actors` loads to run workers (and
    Alembic's `migrations/env.py`, which runs a migration when Alembic loads it, and
    `__main__`, which runs the CLI)."""
    modules = sorted(
        m for m in MODULES if ".migrations" not in m and m not in {"docingest.__main__"}
    )
    changes = global_state_changes(*[m for m in modules if m != "docingest.worker.actors"])
    assert set(changes) == set(modules) - {"docingest.worker.actors"}
    assert [module for module, changed in changes.items() if changed] == []


def test_the_state_check_sees_the_worker_configure_its_process() -> None:
    assert global_state_changes("docingest.worker.actors") == {"docingest.worker.actors": True}
